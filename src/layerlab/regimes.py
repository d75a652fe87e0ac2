"""Which cells a training regime (paper 001 ch. 6: backprop, layer-wise, segment-wise) accepts; torch-free, so
the Snakefile checks configs before any job without importing torch."""

from __future__ import annotations

from layerlab.config import ConfigError

STACKS = {"fnn": None, "cnn": None, "cnn_3c3d": 5, "all_cnn_c": 8}  # plain layer stacks: hidden layers (None: depth)


def hidden_layers(cell: dict) -> int:
    """Number of hidden layers (the units of layer-wise training) of a plain-stack model."""
    return STACKS[cell["model"]] or cell["depth"]


def check_training(cell: dict) -> None:
    """Constraints of the training regime (called by layerlab.config.check_cell)."""
    if cell["training"] == "backprop":
        return
    regime = cell["training"]
    if cell["model"] not in STACKS:
        raise ConfigError(f"training '{regime}' needs a plain stack of layers ({', '.join(STACKS)}); model "
                          f"'{cell['model']}' has residual/skip structure that a per-layer split would cut")
    if regime == "layerwise" and cell["segment_size"] != 1:
        raise ConfigError(f"training 'layerwise' trains one layer per stage (segment_size 1, got "
                          f"{cell['segment_size']}); use training 'segmentwise' for windows of several layers")
    if cell["segment_size"] > hidden_layers(cell):
        raise ConfigError(f"segment_size {cell['segment_size']} exceeds the {hidden_layers(cell)} hidden layers of "
                          f"model '{cell['model']}'")
    if cell["loss"] != "ce":
        raise ConfigError(f"training '{regime}' trains cross-entropy decision heads; loss '{cell['loss']}' is only "
                          f"available with backprop")
    for key in ("curvature_every", "freeze_weights", "grad_rms_probe", "weight_entropy_bits", "quantize_bits"):
        if cell.get(key):
            raise ConfigError(f"{key} is a probe/intervention of the backprop loop; it is not available with "
                              f"training '{regime}'")
