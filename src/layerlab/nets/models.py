"""Networks that expose every hidden activation: deep vanilla FNN/CNN (paper 000) and paper 002's CNNs.

`forward(x)` returns `(logits, hidden)`: `hidden` holds the post-activation output of each hidden layer,
in order, which is what the layer-wise probes and the LBE loss look at. With `bn_variant` other than `none`
every hidden layer gets a BatchNorm between its linear/conv map and its activation (paper 002, Fig. 3.1), and
with `bn_last_layer` the output layer too; with `none` (the default) the networks have no normalization.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from layerlab.catalog.models import CascadeNetParams, DeepOBSParams, FNNParams, ResNetParams
from layerlab.core.cell import Cell
from layerlab.core.registry import MODELS, resolve
from layerlab.core.sections import ModelParams
from layerlab.nets.layers import LayerStack, Network
from layerlab.nets.norm import batch_norm
from layerlab.nets.resnets import resnet
from layerlab.nets.same import same_conv, same_max_pool

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}
INITS = ("torch_default", "he_normal", "he_fan_out", "gaussian", "xavier_normal")


class LayerwiseNet(LayerStack):
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


def block(*modules: nn.Module) -> nn.Module:
    """One layer of the network: the module itself, or a Sequential of several."""
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def output_layer(linear: nn.Module, n_classes: int, model: ModelParams) -> nn.Module:
    """The output layer's map; the thesis's special case (`bn_last_layer`) puts a BatchNorm after it."""
    return block(linear, *batch_norm(n_classes, model.bn_variant)) if model.bn_last_layer else linear


def fnn(input_shape: tuple[int, ...], n_classes: int, model: ModelParams, params: FNNParams) -> LayerwiseNet:
    """`depth` hidden Linear layers of `width` units (or of the per-layer `widths`, e.g. the thesis's
    784-392-196-50-10 MLP), then a linear classifier; bias-free maps with `bias: false` (paper 004's MLP)."""
    norm = model.bn_variant
    sizes = [math.prod(input_shape), *(params.widths or [model.width] * model.depth)]
    layers = [block(nn.Linear(a, b, bias=params.bias), *batch_norm(b, norm))
              for a, b in itertools.pairwise(sizes)]
    head = output_layer(nn.Linear(sizes[-1], n_classes, bias=params.bias), n_classes, model)
    return LayerwiseNet(layers, model.activation, head, flatten_input=True)


def cnn(input_shape: tuple[int, ...], n_classes: int, model: ModelParams, params: None = None) -> LayerwiseNet:
    """`depth - 1` 3x3 same-padding conv layers of `width` channels (no pooling), then one hidden Linear layer
    from the flattened maps to a quarter of their size, then a linear classifier (paper 000's deep vanilla CNN:
    499 convs of 8 channels, FC 6272 -> 1568, classifier)."""
    (channels, h, w), width, norm = input_shape, model.width, model.bn_variant
    convs = [block(nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), *batch_norm(width, norm))
             for i in range(model.depth - 1)]
    features = (width if convs else channels) * h * w
    fc = block(nn.Flatten(), nn.Linear(features, features // 4), *batch_norm(features // 4, norm))
    return LayerwiseNet([*convs, fc], model.activation,
                        output_layer(nn.Linear(features // 4, n_classes), n_classes, model), flatten_input=False)


def _scaled(scale: float, *sizes: int) -> list[int]:
    return [max(1, round(n * scale)) for n in sizes]


def cnn_3c3d(input_shape: tuple[int, ...], n_classes: int, model: ModelParams,
             params: DeepOBSParams) -> LayerwiseNet:
    """Paper 002's smaller CNN, DeepOBS 3C3D: conv 5x5 (64, valid), conv 3x3 (96, valid), conv 3x3 (128, same),
    each ReLU + max-pool 3x3 stride 2 (same); FC 512, FC 256 (ReLU); linear classifier. `width_scale` scales the 5
    hidden widths. BatchNorm sits after each conv/FC map; the max-pool is placed before the ReLU, which is the
    same function (max-pool commutes with ReLU) and keeps `hidden` = post-activation layer outputs. 'Same' windows
    pad as `same_padding` says (layerlab.nets.same; DeepOBS's is `tensorflow`)."""
    c1, c2, c3, f1, f2 = _scaled(params.width_scale, 64, 96, 128, 512, 256)
    norm, pad = model.bn_variant, params.same_padding
    maps: list[list[nn.Module]] = [[nn.Conv2d(input_shape[0], c1, 5)], [nn.Conv2d(c1, c2, 3)],
                                   same_conv(c2, c3, 3, 1, pad)]
    convs = [block(*conv, *batch_norm(c_out, norm), *same_max_pool(3, 2, pad))
             for conv, c_out in zip(maps, (c1, c2, c3), strict=True)]
    with torch.no_grad():
        features = nn.Sequential(*convs)(torch.zeros(1, *input_shape)).numel()
    dense = [block(nn.Flatten(), nn.Linear(features, f1), *batch_norm(f1, norm)),
             block(nn.Linear(f1, f2), *batch_norm(f2, norm))]
    return LayerwiseNet([*convs, *dense], model.activation, output_layer(nn.Linear(f2, n_classes), n_classes, model),
                        flatten_input=False)


def all_cnn_c(input_shape: tuple[int, ...], n_classes: int, model: ModelParams,
              params: DeepOBSParams) -> LayerwiseNet:
    """Paper 002's deeper CNN, ALL-CNN-C (Springenberg et al. 2015, DeepOBS): dropout 0.2 on the input;
    conv 3x3 96, 96, 96 stride 2; dropout 0.5; 192, 192, 192 stride 2; dropout 0.5; conv 3x3 192 (valid),
    1x1 192 (8 hidden layers, ReLU), then the output layer: 1x1 conv to the classes, ReLU, global average pool.
    `width_scale` scales the 96/192 channels. The six 3x3 'same' convs pad as `same_padding` says
    (layerlab.nets.same; DeepOBS's is `tensorflow`)."""
    a, b = _scaled(params.width_scale, 96, 192)
    norm, pad = model.bn_variant, params.same_padding
    spec = [  # (dropout before, c_in, c_out, kernel, stride, 'same' padding)
        (0.2, input_shape[0], a, 3, 1, True), (0.0, a, a, 3, 1, True), (0.0, a, a, 3, 2, True),
        (0.5, a, b, 3, 1, True), (0.0, b, b, 3, 1, True), (0.0, b, b, 3, 2, True),
        (0.5, b, b, 3, 1, False), (0.0, b, b, 1, 1, False),
    ]
    layers = [block(*([nn.Dropout(p)] if p else []),
                    *(same_conv(c_in, c_out, k, s, pad) if same else [nn.Conv2d(c_in, c_out, k, s)]),
                    *batch_norm(c_out, norm))
              for p, c_in, c_out, k, s, same in spec]
    classifier = nn.Sequential(output_layer(nn.Conv2d(b, n_classes, 1), n_classes, model),
                               ACTIVATIONS[model.activation](), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return LayerwiseNet(layers, model.activation, classifier, flatten_input=False)


class Residual(nn.Module):
    """x -> branch(x) + x; with the net's activation after it, paper 003's block x -> tanh(branch(x) + x)."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + x


def _cascade_conv_net(input_shape: tuple[int, ...], n_classes: int, model: ModelParams, down: int,
                      body: Callable[[int], nn.Module]) -> LayerwiseNet:
    """Paper 003's conv nets (official code): a stem of one 3x3 same conv (C_in -> `width`) and `stem_downsample`
    3x3 stride-2 pad-1 convs (28 -> 14 -> 7), then `depth - 1 - stem_downsample` body layers `body(width)` that
    keep the map size; head: valid 3x3 conv, activation, global average pool (the code's AvgPool2d(5) on 5x5),
    Linear(width -> classes, no bias). `depth` counts every hidden layer, stem included."""
    c = model.width
    size = min(input_shape[1:])
    for _ in range(down):
        size = (size - 1) // 2 + 1
    if size < 3:
        raise ValueError(f"model {model.model}: {down} stride-2 stem convs shrink {input_shape[1]}x"
                         f"{input_shape[2]} inputs to {size}x{size}, below the 3x3 its valid convs need "
                         f"(lower stem_downsample)")
    stem = [nn.Conv2d(input_shape[0], c, 3, padding=1)] + [nn.Conv2d(c, c, 3, stride=2, padding=1)
                                                          for _ in range(down)]
    head = nn.Sequential(nn.Conv2d(c, c, 3), ACTIVATIONS[model.activation](), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(c, n_classes, bias=False))
    return LayerwiseNet([*stem, *(body(c) for _ in range(model.depth - len(stem)))], model.activation, head,
                        flatten_input=False)


def cascade_cnn(input_shape: tuple[int, ...], n_classes: int, model: ModelParams,
                params: CascadeNetParams) -> LayerwiseNet:
    """Paper 003's CNN (Fig. 9; `get_conv_net`): body layer = valid 3x3 conv, activation, circular pad 1. The pad
    is applied before the activation here, the same function (it copies values), so `hidden` is the padded map."""
    return _cascade_conv_net(input_shape, n_classes, model, params.stem_downsample,
                             lambda c: block(nn.Conv2d(c, c, 3), nn.CircularPad2d(1)))


def cascade_resnet(input_shape: tuple[int, ...], n_classes: int, model: ModelParams,
                   params: CascadeNetParams) -> LayerwiseNet:
    """Paper 003's ResNet (Fig. 5; `get_resnet_normal`): body layer = residual block x -> act(b(x) + x) with
    b = valid 3x3 conv, circular pad 1, activation, valid 3x3 conv, circular pad 1 (two convs per block)."""
    act = ACTIVATIONS[model.activation]
    return _cascade_conv_net(input_shape, n_classes, model, params.stem_downsample, lambda c: Residual(nn.Sequential(
        nn.Conv2d(c, c, 3), nn.CircularPad2d(1), act(), nn.Conv2d(c, c, 3), nn.CircularPad2d(1))))


def residual_net(input_shape: tuple[int, ...], n_classes: int, model: ModelParams, params: ResNetParams) -> nn.Module:
    """Paper 004's ResNet or PreResNet (`layerlab.nets.resnets`) with the cell's activation."""
    return resnet(input_shape, n_classes, model, params, ACTIVATIONS[model.activation])


def init_weights(model: nn.Module, scheme: str, sigma_w2: float, sigma_b2: float) -> None:
    """Initialise every Linear/Conv layer in place.

    torch_default: keep PyTorch's kaiming_uniform_(a=sqrt(5)), i.e. W ~ U(+-1/sqrt(fan_in)) (paper 000's runs).
    he_normal:     W ~ N(0, 2/fan_in), b = 0.
    he_fan_out:    conv W ~ N(0, 2/fan_out), fan_out = C_out k^2; Linear keeps PyTorch's W, b = 0 (paper 004's ResNet).
    gaussian:      W ~ N(0, sigma_w2/fan_in), b ~ N(0, sigma_b2) (mean-field convention, paper 003).
    xavier_normal: W ~ N(0, 2/(fan_in + fan_out)), b = 0 (paper 002, DeepOBS). BatchNorm keeps gamma = 1, beta = 0.
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
        elif scheme == "he_fan_out" and isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(m.weight)
        elif scheme == "gaussian":
            nn.init.normal_(m.weight, std=math.sqrt(sigma_w2 / fan_in))
        if m.bias is not None:  # convs of the ResNets have none
            nn.init.normal_(m.bias, std=math.sqrt(sigma_b2)) if scheme == "gaussian" else nn.init.zeros_(m.bias)


def build_model(cell: Cell, input_shape: tuple[int, ...], n_classes: int) -> Network:
    """The network a cell describes (its model plug-in's builder on the model section and the plug-in's own), with
    its initial weights seeded by the cell's seed."""
    params = cell.model
    spec = MODELS[params.model]
    torch.manual_seed(cell.run.seed)
    model = resolve(spec.build)(input_shape, n_classes, params, cell[spec.parameters] if spec.parameters else None)
    init_weights(model, params.init, params.sigma_w2, params.sigma_b2)
    return model


def save_init(model: Network, cell: Cell, input_shape: tuple[int, ...], n_classes: int, path: str | Path) -> None:
    """The initial weights with what rebuilds their network (written by the `train` job, read by measurements)."""
    torch.save({"state_dict": model.state_dict(), "cell": cell.to_dict(), "input_shape": input_shape,
                "n_classes": n_classes}, path)


def load_init(path: str | Path, cell: Cell) -> Network:
    """The cell's network with the initial weights of `save_init`."""
    init = torch.load(path, map_location="cpu")
    model = build_model(cell, init["input_shape"], init["n_classes"])
    model.load_state_dict(init["state_dict"])
    return model
