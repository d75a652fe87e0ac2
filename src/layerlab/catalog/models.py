"""Built-in networks (implementations: layerlab.nets.models, layerlab.nets.resnets)."""

from __future__ import annotations

from layerlab.core.config import ConfigError
from layerlab.core.registry import register_model


def depth(cell: dict) -> int:
    return cell["depth"]


def hidden_convs(cell: dict) -> int:
    return cell["depth"] - 1


def check_cascade_net(cell: dict) -> None:
    if cell["depth"] < 1 + cell["stem_downsample"]:
        raise ConfigError(f"model {cell['model']} needs depth >= {1 + cell['stem_downsample']}, its stem "
                          f"(one conv + stem_downsample stride-2 convs); got depth {cell['depth']}")


def check_residual(cell: dict) -> None:
    if cell["depth"] < 8 or (cell["depth"] - 2) % 6:
        raise ConfigError(f"a {cell['model']}'s depth is 6n + 2 with n >= 1 (20, 56, 110, ...), got {cell['depth']}")
    if cell["bn_last_layer"]:
        raise ConfigError(f"bn_last_layer is not defined for model '{cell['model']}'; its fix is last_bn")


register_model("fnn", "layerlab.nets.models:fnn", depth, stack=True)
register_model("cnn", "layerlab.nets.models:cnn", depth, stack=True, conv_layers=hidden_convs)
register_model("cnn_3c3d", "layerlab.nets.models:cnn_3c3d", lambda cell: 5, stack=True, conv_layers=lambda cell: 3)
register_model("all_cnn_c", "layerlab.nets.models:all_cnn_c", lambda cell: 8, stack=True, conv_layers=lambda cell: 8)
register_model("resnet", "layerlab.nets.models:residual_net", hidden_convs, conv_layers=hidden_convs,
               check=check_residual)
register_model("preresnet", "layerlab.nets.models:residual_net", hidden_convs, conv_layers=hidden_convs,
               check=check_residual)
register_model("cascade_cnn", "layerlab.nets.models:cascade_cnn", depth, one_map_per_layer=False, batch_norm=False,
               conv_layers=depth, check=check_cascade_net)  # its head holds a conv and a linear map
register_model("cascade_resnet", "layerlab.nets.models:cascade_resnet", depth, one_map_per_layer=False,
               batch_norm=False, conv_layers=depth, check=check_cascade_net)
