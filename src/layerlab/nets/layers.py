"""The network every model plug-in builds (a `Network` subclass), and the layer map the probes read.

A network's `forward(x)` returns `(logits, hidden)`: `hidden` holds the output of each hidden layer in order (what
batch entropy, LBE and the cascade look at). `layers` are the hidden layers, `head` the output layer. Layer index l
is the l-th hidden layer and `len(layers)` the output layer (the convention of every per-layer variable). A model
declared with `one_map_per_layer` holds exactly one Linear/Conv2d map in each layer and in the head (curvature,
gradient RMS, weight entropy, freeze_weights), and at most one BatchNorm (the gamma/beta probe). A `LayerStack`
(models declared `stack`) is a plain sequence of (layer, activation) blocks that the staged regimes can split.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class Network(nn.Module):
    """Base class of a model plug-in's network: `layers` (the hidden layers), `head` (the output layer), and
    `forward(x) -> (logits, hidden)`."""

    layers: nn.ModuleList
    head: nn.Module


class LayerStack(Network):
    """A plain stack: hidden[l] = acts[l](layers[l](hidden[l - 1])), the input flattened first or not."""

    acts: nn.ModuleList
    flatten_input: bool


def measured_layers(model: Network) -> list[nn.Linear | nn.Conv2d]:
    """The Linear/Conv2d map of every hidden layer and of the output layer (`head`), in order: layer index l is
    the l-th hidden layer, the output layer is `len(model.layers)` (the batch-entropy/BN-parameter convention)."""
    found: list[nn.Linear | nn.Conv2d] = []
    for layer, block in enumerate([*model.layers, model.head]):
        maps = [m for m in block.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        if len(maps) != 1:
            raise ValueError(f"layer {layer} has {len(maps)} Linear/Conv2d maps; the curvature probe expects one")
        found.append(maps[0])
    return found


def unfrozen_parameters(model: Network, pattern: str = "") -> list[nn.Parameter]:
    """The parameters the optimizer updates: all but the weights of layers whose digit in `pattern` is 0 (the
    official code's `flag_updateWeight = false`, paper 004's simulated weight domination, Fig. 4)."""
    if not pattern:
        return list(model.parameters())
    layers = measured_layers(model)
    if len(pattern) != len(layers):
        raise ValueError(f"freeze_weights '{pattern}' needs one digit per layer ({len(layers)})")
    frozen = {id(m.weight) for m, bit in zip(layers, pattern, strict=True) if bit == "0"}
    return [p for p in model.parameters() if id(p) not in frozen]


@contextmanager
def kept_buffers(model: nn.Module) -> Iterator[None]:
    """A measurement's forward in training mode that leaves training as it was: it runs on clones of the buffers
    (BatchNorm running statistics); the originals, possibly saved in the autograd graph of the training step, are
    put back unmodified."""
    saved = [(m, name, buf) for m in model.modules() for name, buf in m._buffers.items() if buf is not None]
    for m, name, buf in saved:
        setattr(m, name, buf.clone())
    try:
        yield
    finally:
        for m, name, buf in saved:
            setattr(m, name, buf)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """A measurement in eval mode (BatchNorm's running statistics, no dropout) that puts every module's own
    train/eval flag back afterwards (a staged regime's frozen parts stay in eval mode)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training
