"""Deep vanilla networks (no skip, no normalization, no dropout) that expose every hidden activation.

`forward(x)` returns `(logits, hidden)`: `hidden` holds the post-activation output of each hidden layer,
in order, which is what the layer-wise probes and the LBE loss look at.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}
INITS = ("torch_default", "he_normal", "gaussian")


class LayerwiseNet(nn.Module):
    """A stack of (layer, activation) blocks followed by a classifier head."""

    def __init__(self, layers: list[nn.Module], activation: str, head: nn.Module, flatten_input: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.acts = nn.ModuleList(ACTIVATIONS[activation]() for _ in layers)
        self.head = head
        self.flatten_input = flatten_input

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = x.flatten(1) if self.flatten_input else x
        hidden = []
        for layer, act in zip(self.layers, self.acts, strict=True):
            h = act(layer(h))
            hidden.append(h)
        return self.head(h), hidden


def fnn(input_shape: tuple[int, ...], n_classes: int, depth: int, width: int, activation: str) -> LayerwiseNet:
    """`depth` hidden Linear layers of `width` units, then a linear classifier."""
    sizes = [math.prod(input_shape)] + [width] * depth
    layers = [nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
    return LayerwiseNet(layers, activation, nn.Linear(width, n_classes), flatten_input=True)


def cnn(input_shape: tuple[int, ...], n_classes: int, depth: int, width: int, activation: str) -> LayerwiseNet:
    """`depth - 1` 3x3 same-padding conv layers of `width` channels (no pooling), then one hidden Linear layer
    from the flattened maps to a quarter of their size, then a linear classifier (paper 000's deep vanilla CNN:
    499 convs of 8 channels, FC 6272 -> 1568, classifier)."""
    channels, h, w = input_shape
    convs = [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1) for i in range(depth - 1)]
    features = (width if convs else channels) * h * w
    fc = nn.Sequential(nn.Flatten(), nn.Linear(features, features // 4))
    return LayerwiseNet([*convs, fc], activation, nn.Linear(features // 4, n_classes), flatten_input=False)


MODELS = {"fnn": fnn, "cnn": cnn}


def init_weights(model: nn.Module, scheme: str, sigma_w2: float = 1.0, sigma_b2: float = 0.0) -> None:
    """Initialise every Linear/Conv layer in place.

    torch_default: keep PyTorch's kaiming_uniform_(a=sqrt(5)), i.e. W ~ U(+-1/sqrt(fan_in)) (paper 000's runs).
    he_normal:     W ~ N(0, 2/fan_in), b = 0.
    gaussian:      W ~ N(0, sigma_w2/fan_in), b ~ N(0, sigma_b2) (mean-field convention, paper 003).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init '{scheme}'; known: {', '.join(INITS)}")
    if scheme == "torch_default":
        return
    for m in model.modules():
        if not isinstance(m, nn.Linear | nn.Conv2d):
            continue
        fan_in = m.weight[0].numel()
        if scheme == "he_normal":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        else:
            nn.init.normal_(m.weight, std=math.sqrt(sigma_w2 / fan_in))
            nn.init.normal_(m.bias, std=math.sqrt(sigma_b2))


def build_model(cell: dict, input_shape: tuple[int, ...], n_classes: int) -> LayerwiseNet:
    """The network a cell describes, with its seeded initial weights."""
    torch.manual_seed(cell["seed"])
    model = MODELS[cell["model"]](input_shape, n_classes, cell["depth"], cell["width"], cell["activation"])
    init_weights(model, cell["init"], cell["sigma_w2"], cell["sigma_b2"])
    return model
