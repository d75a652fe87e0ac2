"""Constraints between cell parameters that a JSON schema cannot express, gathered from the plug-ins."""

from __future__ import annotations

from layerlab.catalog.losses import check_loss
from layerlab.core.config import ConfigError
from layerlab.core.registry import DATASETS, MEASUREMENTS, MODELS, PROBES, REGIMES, network_input


def check_model(cell: dict) -> None:
    spec = MODELS[cell["model"]]
    if not spec.batch_norm and (cell["bn_variant"] != "none" or cell["bn_last_layer"]):
        raise ConfigError(f"model {cell['model']} has no BatchNorm: bn_variant must be 'none' (got "
                          f"'{cell['bn_variant']}', bn_last_layer {cell['bn_last_layer']})")
    if cell["bn_last_layer"] and cell["bn_variant"] == "none":
        raise ConfigError("bn_last_layer needs a BatchNorm variant (bn_variant is 'none')")
    for key, what, applies in [("last_bn", "a BatchNorm before the classifier", cell["last_bn"]),
                               ("residual", "false removes the shortcuts", not cell["residual"])]:
        if applies and cell["model"] not in ("resnet", "preresnet"):
            raise ConfigError(f"{key} ({what}) needs model 'resnet' or 'preresnet' (got '{cell['model']}')")
    if not cell["bias"] and cell["model"] != "fnn":
        raise ConfigError(f"bias false (bias-free Linear maps) needs model 'fnn' (got '{cell['model']}')")
    if (widths := cell["widths"]) and (cell["model"] != "fnn" or len(widths) != cell["depth"]):
        raise ConfigError(f"widths {widths} needs model 'fnn' and depth = its length {len(widths)} "
                          f"(got model '{cell['model']}', depth {cell['depth']})")
    if spec.check:
        spec.check(cell)
    if pattern := cell["freeze_weights"]:
        if not spec.one_map_per_layer:
            raise ConfigError(f"freeze_weights needs one Linear/Conv map per layer; model '{cell['model']}' has "
                              f"layers with several")
        if len(pattern) != (n_maps := spec.hidden_layers(cell) + 1):
            raise ConfigError(f"freeze_weights needs one digit per layer including the output layer, "
                              f"{n_maps} (got '{pattern}')")


def check_k_filter(cell: dict) -> None:
    """k-filtering (paper 001 ch. 5) draws backprop's batches from the kept rows, or filters the batches of the
    upper partitions of partition-wise training (Sec. 6.8.2)."""
    if not (k := cell["k_filter"]):
        return
    if REGIMES[cell["training"]].k_filter is None:
        able = " and ".join(f"'{s.name}' ({s.k_filter})" for s in REGIMES.values() if s.k_filter)
        raise ConfigError(f"k_filter is an option of training {able}; got training '{cell['training']}'")
    if 0 < cell["k_filter_batch"] <= k:
        raise ConfigError(f"k_filter_batch ({cell['k_filter_batch']}) must exceed k_filter ({k}): each row needs k "
                          f"neighbours in its batch (0: the whole training split)")


def input_shape(cell: dict) -> tuple[int, ...]:
    """(channels, height, width) of what the cell's network sees, from its dataset's declaration; raises ConfigError
    for an input_crop or input_pool larger than the images."""
    return network_input(cell["dataset"], DATASETS[cell["dataset"]].shape, cell["input_pool"], cell["input_crop"],
                         cell["input_resize"])


def active_probes(cell: dict) -> list[str]:
    """The training probes a cell runs, in registration order (a cell without a plug-in's parameters has their
    defaults)."""
    return [spec.name for spec in PROBES.values()
            if spec.enabled({**{k: v["default"] for k, v in spec.parameters.items()}, **cell})]


def check_probes(cell: dict) -> None:
    regime = cell["training"]
    for name in active_probes(cell):
        spec = PROBES[name]
        if spec.regimes is not None and regime not in spec.regimes:
            switch = f" (switched on by {', '.join(spec.keys)})" if spec.keys else ""
            raise ConfigError(f"training probe '{name}'{switch} does not run with training '{regime}'; it runs with "
                              f"training {' or '.join(repr(r) for r in spec.regimes)}")
        if spec.layer_maps and not MODELS[cell["model"]].one_map_per_layer:
            raise ConfigError(f"training probe '{name}' needs one Linear/Conv map per layer; model "
                              f"'{cell['model']}' has layers with several")
        if spec.check:
            spec.check(cell)


def check_cell(cell: dict, measurements: list[str] | None = None) -> None:
    """Every plug-in's constraints on `cell` (model, loss, regime, training probes, the study's measurements)."""
    input_shape(cell)  # input_crop and input_pool against the dataset's images
    check_model(cell)
    check_loss(cell)
    regime = REGIMES[cell["training"]]
    if regime.check:
        regime.check(cell)
    check_probes(cell)
    check_k_filter(cell)
    for name in measurements or []:
        if (spec := MEASUREMENTS[name]).check:
            spec.check(cell)
