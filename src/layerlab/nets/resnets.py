"""Paper 004's CIFAR ResNets (fb.resnet.torch layout) with and without one BatchNorm before the last linear layer:
the original ResNet (He et al. 2016a) vs ResNet_LastBN (the paper's fix for the ill-conditioned last layer), and
the pre-activation PreResNet (He et al. 2016b, whose final BN is such a BatchNorm) vs PreResNet_v1 (without it).

Depth 6n + 2: a 3x3 conv stem of `width` channels, three stages of n basic blocks of `width`, 2 `width`,
4 `width` channels (stride 2 at the start of stages 2 and 3), global average pooling and the linear classifier.
A basic block is conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU after the addition (the
"original" post-activation block). The pre-activation block is BN -> ReLU -> conv -> BN -> ReLU -> conv plus
the shortcut; the net's first block pre-activates its input for both branches ('both_preact'); after the last
block come BN (PreResNet; `last_bn`) and ReLU (both) before the pooling. Shortcuts are type A: the identity, or
at a stage transition a stride-2 subsample zero-padded to the new channel count (parameter-free). Convs have no
bias. `residual: false` drops every shortcut: paper 004's "VGG-style" ResNet (App. E7, Fig. A8), a plain stack of
the same convs.

Every conv is one hidden *layer* (with its BN and ReLU; the second conv of a block also adds the shortcut), so
`layers` holds depth - 1 modules with exactly one conv each and `hidden` the output of each (post-ReLU in the
original ResNet, the conv output plus shortcut in PreResNet): batch entropy, gamma/beta trajectories, weight
freezing and the curvature probe see one map per layer, and the output layer (index depth - 1) is the classifier,
as for every other network here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from layerlab.catalog.models import ResNetParams
from layerlab.core.sections import ModelParams
from layerlab.nets.layers import Network
from layerlab.nets.norm import batch_norm


def shortcut(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Type-A shortcut: `x` itself, or subsampled by 2 and zero-padded in channels to the shape of `like`."""
    if x.shape == like.shape:
        return x
    x = x[:, :, ::2, ::2]
    return F.pad(x, (0, 0, 0, 0, 0, like.shape[1] - x.shape[1]))


class ResNet(Network):
    """`layers[0]` is the stem; `layers[2b + 1]`, `layers[2b + 2]` are block b's two convs."""

    def __init__(self, layers: list[nn.Module], activation: Callable[[], nn.Module], head: nn.Module,
                 residual: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.acts = nn.ModuleList(activation() for _ in layers)
        self.head, self.residual = head, residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`hidden`: each conv layer's output after its BN, shortcut and activation."""
        h = self.acts[0](self.layers[0](x))
        hidden = [h]
        for i in range(1, len(self.layers), 2):
            block_input = h
            h = self.acts[i](self.layers[i](block_input))
            hidden.append(h)
            out = self.layers[i + 1](h)
            h = self.acts[i + 1](out + shortcut(block_input, out) if self.residual else out)
            hidden.append(h)
        return self.head(h), hidden


class PreResNet(Network):
    """Pre-activation layout: `layers[i]` = (BN, activation, conv) except the stem (conv only)."""

    def __init__(self, layers: list[nn.Module], head: nn.Module, residual: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head, self.residual = head, residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`hidden`: each conv layer's output (with the shortcut added after a block's second conv)."""
        h = self.layers[0](x)
        hidden = [h]
        for i in range(1, len(self.layers), 2):
            first = self.layers[i]
            assert isinstance(first, nn.Sequential)  # (BN, activation, conv)
            block_input = first[:-1](h) if i == 1 else h  # 'both_preact': the shortcut sees the pre-activation
            h = first[-1](block_input) if i == 1 else first(h)
            hidden.append(h)
            out = self.layers[i + 1](h)
            h = out + shortcut(block_input, out) if self.residual else out
            hidden.append(h)
        return self.head(h), hidden


def blocks_per_stage(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a ResNet's depth is 6n + 2 with n >= 1 (20, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


def resnet(input_shape: tuple[int, ...], n_classes: int, model: ModelParams, params: ResNetParams,
           activation: Callable[[], nn.Module]) -> ResNet | PreResNet:
    """The cell's ResNet (`model` resnet or preresnet): `depth` = 6n + 2, `width` = stem channels (16 in the
    paper), `bn_variant` the BatchNorm of every conv (the paper's: bn_gamma_beta), `last_bn` one full BatchNorm
    before the classifier: BatchNorm1d between pooling and classifier (ResNet_LastBN), or the final BatchNorm2d
    of PreResNet (without it: PreResNet_v1); `residual` false removes the shortcuts (VGG-style)."""
    n, width, norm, pre = blocks_per_stage(model.depth), model.width, model.bn_variant, model.model == "preresnet"

    def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Module:
        conv = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        return nn.Sequential(*batch_norm(c_in, norm), activation(), conv) if pre else \
            nn.Sequential(conv, *batch_norm(c_out, norm))

    layers = [nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)) if pre else
              conv(input_shape[0], width)]
    c_in = width
    for stage in range(3):
        c_out = width * 2**stage
        for b in range(n):
            layers += [conv(c_in, c_out, 2 if stage and not b else 1), conv(c_out, c_out)]
            c_in = c_out
    last_bn = batch_norm(c_in, "bn_gamma_beta") if params.last_bn else []
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if pre:
        return PreResNet(layers, nn.Sequential(*last_bn, activation(), *pool, nn.Linear(c_in, n_classes)),
                         params.residual)
    return ResNet(layers, activation, nn.Sequential(*pool, *last_bn, nn.Linear(c_in, n_classes)), params.residual)
