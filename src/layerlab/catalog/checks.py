"""Constraints between cell parameters that a JSON schema cannot express, gathered from the plug-ins."""

from __future__ import annotations

from layerlab.catalog.losses import check_loss
from layerlab.catalog.models import DeepOBSParams, FNNParams, ResNetParams
from layerlab.catalog.regimes import BackpropParams
from layerlab.core.cell import Cell
from layerlab.core.config import ConfigError
from layerlab.core.registry import DATASETS, MEASUREMENTS, MODELS, PROBES, REGIMES, network_input
from layerlab.core.sections import DataParams


def check_model(cell: Cell) -> None:
    model, spec = cell.model, MODELS[cell.model.model]
    if not spec.batch_norm and (model.bn_variant != "none" or model.bn_last_layer):
        raise ConfigError(f"model {model.model} has no BatchNorm: bn_variant must be 'none' (got "
                          f"'{model.bn_variant}', bn_last_layer {model.bn_last_layer})")
    if model.bn_last_layer and model.bn_variant == "none":
        raise ConfigError("bn_last_layer needs a BatchNorm variant (bn_variant is 'none')")
    resnet, fnn = cell[ResNetParams], cell[FNNParams]
    for key, what, applies in [("last_bn", "a BatchNorm before the classifier", resnet.last_bn),
                               ("residual", "false removes the shortcuts", not resnet.residual)]:
        if applies and model.model not in ("resnet", "preresnet"):
            raise ConfigError(f"{key} ({what}) needs model 'resnet' or 'preresnet' (got '{model.model}')")
    if (padding := cell[DeepOBSParams].same_padding) != "symmetric" and model.model not in ("cnn_3c3d", "all_cnn_c"):
        raise ConfigError(f"same_padding {padding} needs model 'cnn_3c3d' or 'all_cnn_c' (got '{model.model}')")
    if not fnn.bias and model.model != "fnn":
        raise ConfigError(f"bias false (bias-free Linear maps) needs model 'fnn' (got '{model.model}')")
    if (widths := fnn.widths) and (model.model != "fnn" or len(widths) != model.depth):
        raise ConfigError(f"widths {list(widths)} needs model 'fnn' and depth = its length {len(widths)} "
                          f"(got model '{model.model}', depth {model.depth})")
    if spec.check:
        spec.check(cell)
    if pattern := cell[BackpropParams].freeze_weights:
        if not spec.one_map_per_layer:
            raise ConfigError(f"freeze_weights needs one Linear/Conv map per layer; model '{model.model}' has "
                              f"layers with several")
        if len(pattern) != (n_maps := spec.hidden_layers(cell) + 1):
            raise ConfigError(f"freeze_weights needs one digit per layer including the output layer, "
                              f"{n_maps} (got '{pattern}')")


def check_k_filter(cell: Cell) -> None:
    """k-filtering (paper 001 ch. 5) draws backprop's batches from the kept rows, or filters the batches of the
    upper partitions of partition-wise training (Sec. 6.8.2)."""
    if not (k := cell.run.k_filter):
        return
    if REGIMES[cell.regime.training].k_filter is None:
        able = " and ".join(f"'{s.name}' ({s.k_filter})" for s in REGIMES.values() if s.k_filter)
        raise ConfigError(f"k_filter is an option of training {able}; got training '{cell.regime.training}'")
    if 0 < (batch := cell.run.k_filter_batch) <= k:
        raise ConfigError(f"k_filter_batch ({batch}) must exceed k_filter ({k}): each row needs k neighbours in its "
                          f"batch (0: the whole training split)")


def input_shape(data: DataParams) -> tuple[int, ...]:
    """(channels, height, width) of what the network sees of `data`, from its dataset's declaration; raises
    ConfigError for an input_crop or input_pool larger than the images."""
    return network_input(data.dataset, DATASETS[data.dataset].shape, data.input_pool, data.input_crop,
                         data.input_resize)


def active_probes(cell: Cell) -> list[str]:
    """The training probes a cell runs, in registration order."""
    return [spec.name for spec in PROBES.values() if spec.enabled(cell)]


def check_probes(cell: Cell) -> None:
    regime = cell.regime.training
    for name in active_probes(cell):
        spec = PROBES[name]
        if spec.regimes is not None and regime not in spec.regimes:
            switch = f" (switched on by {', '.join(spec.keys)})" if spec.keys else ""
            raise ConfigError(f"training probe '{name}'{switch} does not run with training '{regime}'; it runs with "
                              f"training {' or '.join(repr(r) for r in spec.regimes)}")
        if spec.layer_maps and not MODELS[cell.model.model].one_map_per_layer:
            raise ConfigError(f"training probe '{name}' needs one Linear/Conv map per layer; model "
                              f"'{cell.model.model}' has layers with several")
        if spec.check:
            spec.check(cell)


def check_cell(cell: Cell, measurements: list[str] | None = None) -> None:
    """Every plug-in's constraints on `cell` (model, loss, regime, training probes, the study's measurements)."""
    input_shape(cell.data)  # input_crop and input_pool against the dataset's images
    check_model(cell)
    check_loss(cell)
    regime = REGIMES[cell.regime.training]
    if regime.check:
        regime.check(cell)
    check_probes(cell)
    check_k_filter(cell)
    for name in measurements or []:
        if (spec := MEASUREMENTS[name]).check:
            spec.check(cell)
