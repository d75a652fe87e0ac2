"""The networks of the staged regimes (layer-wise, segment-wise, partition-wise, round robin): windows of layers,
the stage network (frozen feednet, trained window, decision head) and the thesis's forward and backward dropout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from layerlab.core.cell import Cell
from layerlab.core.registry import DECISION_HEADS, REGIMES, resolve
from layerlab.core.sections import OptimizerParams, RegimeParams
from layerlab.nets.layers import LayerStack
from layerlab.nets.models import init_weights
from layerlab.training.memory import LossFn

STAGE_SEED = 7919  # head of stage i is initialised from seed * STAGE_SEED + i (independent of the global RNG)


class GradDropout(torch.autograd.Function):
    """Identity forward; backward multiplies dL/dh by an inverted-dropout mask (keep with 1 - p, scale 1/(1 - p))."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
        ctx.p, ctx.generator = p, generator
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return dropout(grad, ctx.p, ctx.generator), None, None


def dropout(h: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted elementwise dropout with its own generator (so the mask stream is seeded and reproducible)."""
    if p == 0:
        return h
    keep = torch.rand(h.shape, generator=generator, device=h.device, dtype=h.dtype) >= p
    return h * keep / (1 - p)


def grad_dropout(h: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return GradDropout.apply(h, p, generator) if p > 0 else h


@dataclass
class Noise:
    """The thesis's forward (input) and backward (gradient) dropout of one stage."""

    p_input: float
    p_grad: float
    generator: torch.Generator | None


class StageNet(nn.Module):
    """The network of one stage: frozen feednet layers [0, start), trained layers [start, stop), a head.

    `forward(x, noise)` returns `(logits, hidden)` like the model (the feednet's hidden outputs computed under
    `no_grad`), so evaluation and the probes apply. The feednet stays in eval mode whatever `train()` is asked."""

    def __init__(self, model: LayerStack, start: int, stop: int, head: nn.Module):
        super().__init__()
        self.frozen = nn.ModuleList(model.layers[:start])
        self.frozen_acts = nn.ModuleList(model.acts[:start])
        self.trained = nn.ModuleList(model.layers[start:stop])
        self.acts = nn.ModuleList(model.acts[start:stop])
        self.head = head
        self.flatten_input = model.flatten_input

    def train(self, mode: bool = True) -> StageNet:
        super().train(mode)
        self.frozen.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feednet's hidden outputs (the input itself, flattened or not, when there is no feednet)."""
        hidden = [x.flatten(1) if self.flatten_input else x]
        for layer, act in zip(self.frozen, self.frozen_acts, strict=True):
            hidden.append(act(layer(hidden[-1])))
        return hidden

    def forward(self, x: torch.Tensor, noise: Noise | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs, *hidden = self.features(x)
        h = hidden[-1] if hidden else inputs
        if noise:
            h = dropout(h, noise.p_input, noise.generator)
        for layer, act in zip(self.trained, self.acts, strict=True):
            h = act(layer(h))
            hidden.append(h)
        if noise:
            h = grad_dropout(h, noise.p_grad, noise.generator)
        return self.head(h), hidden


def windows(n_layers: int, k: int) -> list[tuple[int, int]]:
    """Sliding windows [start, stop) of k layers with overlap k - 1, bottom-up (layer-wise: k = 1)."""
    if not 1 <= k <= n_layers:
        raise ValueError(f"segment_size {k} must be between 1 and the number of hidden layers ({n_layers})")
    return [(i, i + k) for i in range(n_layers - k + 1)]


def partitions(n_layers: int, k: int) -> list[tuple[int, int]]:
    """Consecutive partitions [start, stop) of k layers without overlap, bottom-up; the top one may be shorter
    (partition-wise training, DPL)."""
    if not 1 <= k <= n_layers:
        raise ValueError(f"segment_size {k} must be between 1 and the number of hidden layers ({n_layers})")
    return [(i, min(i + k, n_layers)) for i in range(0, n_layers, k)]


def window_list(kind: str, n_layers: int, k: int) -> list[tuple[int, int]]:
    """Single layers, sliding windows of k layers or partitions of k layers."""
    match kind:
        case "single":
            return windows(n_layers, 1)
        case "sliding":
            return windows(n_layers, k)
        case "partitions":
            return partitions(n_layers, k)
    raise ValueError(f"unknown kind of windows '{kind}' (single, sliding, partitions)")


def stage_windows(regime: RegimeParams, n_layers: int) -> list[tuple[int, int]]:
    """The windows of the staged regime (its spec's `windows` option)."""
    return window_list(REGIMES[regime.training].options["windows"], n_layers, regime.segment_size)


def stage_schedule(opt: OptimizerParams, regime: RegimeParams, stage: int) -> OptimizerParams:
    """The optimizer of stage `stage`: lr x decay^i, weight decay x growth^i."""
    return replace(opt, lr=opt.lr * regime.layer_lr_decay ** stage,
                   weight_decay=opt.weight_decay * regime.layer_wd_growth ** stage)


def make_head(cell: Cell, shape: tuple[int, ...], n_classes: int, stage: int) -> nn.Module:
    """A fresh decision head `layer_head` for features of `shape` (one example), seeded per stage."""
    spec, model = DECISION_HEADS[cell.regime.layer_head], cell.model
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(cell.run.seed * STAGE_SEED + stage)
        head = resolve(spec.build)(shape, n_classes, model, cell[spec.parameters] if spec.parameters else None)
        init_weights(head, model.init, model.sigma_w2, model.sigma_b2)
    return head


@torch.no_grad()
def window_shape(model: LayerStack, stop: int, x: torch.Tensor) -> tuple[int, ...]:
    """The shape of one example at the output of layer `stop - 1`."""
    return tuple(StageNet(model, 0, stop, nn.Identity()).eval()(x[:1])[0].shape[1:])


def stage_network(cell: Cell, model: LayerStack, i: int, window: tuple[int, int], last: bool, n_classes: int,
                  x: torch.Tensor) -> StageNet:
    """Stage i's network on `window`: a fresh head (the model's own output layer for the last stage); only the
    window's and the head's parameters require gradients (call with all of `model`'s parameters frozen)."""
    start, stop = window
    head = model.head if last else make_head(cell, window_shape(model, stop, x), n_classes, i).to(x.device)
    stage = StageNet(model, start, stop, head).train()  # window and head in training mode, feednet in eval mode
    for p in [*stage.trained.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    return stage


def noisy_step_loss(regime: RegimeParams, device: torch.device) -> LossFn:
    """The loss of one training step of a stage network with the stage's dropouts (what a memory measurement
    replays: the masks are saved for backward)."""
    noise = Noise(regime.input_dropout, regime.grad_dropout, torch.Generator(device=device))
    return lambda net, x, y: F.cross_entropy(net(x, noise)[0], y)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """`model` with no parameter requiring gradients; the flags and the train/eval modes (stage networks set them)
    restored afterwards."""
    flags, modes = [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


