"""Built-in networks and their own parameter sections (implementations: layerlab.nets.models,
layerlab.nets.resnets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from layerlab.core.config import ConfigError
from layerlab.core.params import Section, param
from layerlab.core.registry import register_model

if TYPE_CHECKING:
    from layerlab.core.cell import Cell


@dataclass(frozen=True)
class FNNParams(Section):
    """fnn's own parameters."""

    bias: bool = param(True, "fnn: Linear maps with a bias; false: bias-free (paper 004's MLP, Eq. 3: theta = {W_k})")
    widths: tuple[int, ...] = param(
        (), "fnn: per-hidden-layer units, e.g. [392, 196, 50] (needs depth = its length); []: width x depth",
        items={"minimum": 1})


@dataclass(frozen=True)
class DeepOBSParams(Section):
    """The own parameters of cnn_3c3d and all_cnn_c (paper 002's DeepOBS networks)."""

    width_scale: float = param(
        1.0, "cnn_3c3d, all_cnn_c: multiplies every hidden width (1: the thesis's)", exclusiveMinimum=0)
    same_padding: Literal["symmetric", "tensorflow"] = param(
        "symmetric", "cnn_3c3d, all_cnn_c: how their 'same' conv and max-pool windows pad (layerlab.nets.same): "
        "symmetric (PyTorch's k // 2 on every side) or tensorflow (TensorFlow's 'same', as DeepOBS and its PyTorch "
        "port, paper 002: an odd total's extra pixel at the bottom/right only; differs at every stride-2 window of "
        "32x32 inputs)")


@dataclass(frozen=True)
class ResNetParams(Section):
    """resnet's and preresnet's own parameters."""

    residual: bool = param(
        True, "resnet, preresnet: false removes every shortcut (paper 004's VGG-style ResNet, App. E7)")
    last_bn: bool = param(
        False, "resnet: one BatchNorm1d on the pooled features before the classifier (paper 004's fix, ResNet_LastBN);"
        " preresnet: the final BatchNorm2d (PreResNet; without it PreResNet_v1)")


@dataclass(frozen=True)
class CascadeNetParams(Section):
    """cascade_cnn's and cascade_resnet's own parameter."""

    stem_downsample: int = param(
        2, "cascade_cnn, cascade_resnet: stride-2 convs in the stem (the paper's 2: 28x28 -> 7x7; 8x8 digits need 1: "
        "-> 4x4)", minimum=0)


def depth(cell: Cell) -> int:
    return cell.model.depth


def hidden_convs(cell: Cell) -> int:
    return cell.model.depth - 1


def check_cascade_net(cell: Cell) -> None:
    model, down = cell.model, cell[CascadeNetParams].stem_downsample
    if model.depth < 1 + down:
        raise ConfigError(f"model {model.model} needs depth >= {1 + down}, its stem (one conv + stem_downsample "
                          f"stride-2 convs); got depth {model.depth}")


def check_residual(cell: Cell) -> None:
    model = cell.model
    if model.depth < 8 or (model.depth - 2) % 6:
        raise ConfigError(f"a {model.model}'s depth is 6n + 2 with n >= 1 (20, 56, 110, ...), got {model.depth}")
    if model.bn_last_layer:
        raise ConfigError(f"bn_last_layer is not defined for model '{model.model}'; its fix is last_bn")


register_model("fnn", "layerlab.nets.models:fnn", depth, stack=True, parameters=FNNParams)
register_model("cnn", "layerlab.nets.models:cnn", depth, stack=True, conv_layers=hidden_convs)
register_model("cnn_3c3d", "layerlab.nets.models:cnn_3c3d", lambda cell: 5, stack=True, conv_layers=lambda cell: 3,
               parameters=DeepOBSParams)
register_model("all_cnn_c", "layerlab.nets.models:all_cnn_c", lambda cell: 8, stack=True, conv_layers=lambda cell: 8,
               parameters=DeepOBSParams)
register_model("resnet", "layerlab.nets.models:residual_net", hidden_convs, conv_layers=hidden_convs,
               check=check_residual, parameters=ResNetParams)
register_model("preresnet", "layerlab.nets.models:residual_net", hidden_convs, conv_layers=hidden_convs,
               check=check_residual, parameters=ResNetParams)
register_model("cascade_cnn", "layerlab.nets.models:cascade_cnn", depth, one_map_per_layer=False, batch_norm=False,
               conv_layers=depth, check=check_cascade_net, parameters=CascadeNetParams)  # its head: a conv and a linear
register_model("cascade_resnet", "layerlab.nets.models:cascade_resnet", depth, one_map_per_layer=False,
               batch_norm=False, conv_layers=depth, check=check_cascade_net, parameters=CascadeNetParams)
