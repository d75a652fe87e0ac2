"""Decision blocks of the staged regimes and their memory-targeted search (paper 001 ch. 6, Sec. 6.2.2, Table 6.3):
hand-computed shapes and parameter counts, the dry (extrapolated) memory against direct `step_memory`, the search
against a brute-force enumeration and the memory probe, config errors, the figure."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import TINY_STUDY, changed, make_cell, snakemake, write_study
from torch import nn
from torch.nn import functional as F

import layerlab.training.head_search as hs
import layerlab.training.regimes.stage_nets as sn
from layerlab.catalog import check_cell
from layerlab.catalog.decision_heads import DecisionBlockParams
from layerlab.core.cell import Cell
from layerlab.core.config import ConfigError
from layerlab.core.store import read_store
from layerlab.nets.decision import decision_block, down_convs, head_config, search_space
from layerlab.nets.models import build_model
from layerlab.probes.memory import first_batch, step_memory
from layerlab.training.loop import train_cell
from layerlab.training.memory import ce_step_loss, extrapolated_step_memory
from layerlab.training.optim import make_optimizer
from layerlab.workflow.validate import check_study


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cnn(**overrides) -> Cell:
    """The quick study's small CNN: 9 convs of 8 channels on 8x8 maps, FC 512 -> 128, SGD momentum, batch 256."""
    return make_cell(**{"model": "cnn", "depth": 10, "width": 8, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                        "batch_size": 256, "training": "layerwise", "layer_head": "decision_block",
                        "decision_convs": 2, "decision_channels": 256, **overrides})


def batch(shape: tuple[int, ...], n: int, n_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, n_classes, (n,), generator=gen)


# --- the head ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,convs,channels,pool,out_map,expected_params", [
    # 8x8 -> 4x4 -> 2x2, no pool needed: convs 5*(8*9+1) + 5*(5*9+1), Linear (5*2*2+1)*10
    ((8, 8, 8), 2, 5, 2, (5, 2, 2), 5 * (8 * 9 + 1) + 5 * (5 * 9 + 1) + (5 * 4 + 1) * 10),
    # 9x7 -> 5x4 (ceil halves), down-pool to 2x2: conv 4*(3*9+1), Linear (4*2*2+1)*10
    ((3, 9, 7), 1, 4, 2, (4, 2, 2), 4 * (3 * 9 + 1) + (4 * 4 + 1) * 10),
    # 3x3 -> 2x2 -> 1x1: only 2 of 5 down-convs fit; pool 0 flattens
    ((2, 3, 3), 5, 3, 0, (3, 1, 1), 3 * (2 * 9 + 1) + 3 * (3 * 9 + 1) + (3 + 1) * 10),
    # no down-conv: down-pool 6x6 -> 3x3, Linear (4*9+1)*10
    ((4, 6, 6), 0, 7, 3, (4, 3, 3), (4 * 9 + 1) * 10),
    ((16,), 2, 8, 2, (16,), (16 + 1) * 10),  # a vector: the Linear classifier alone
])
def test_decision_block_shape_and_parameters_match_a_hand_computation(shape, convs, channels, pool, out_map,
                                                                      expected_params):
    block = DecisionBlockParams(decision_convs=convs, decision_channels=channels, decision_pool=pool)
    torch.manual_seed(0)
    head = decision_block(shape, 10, make_cell().model, block)
    assert n_params(head) == expected_params
    x = torch.randn(6, *shape)
    assert head(x).shape == (6, 10)
    # an independent functional forward: stride-2 3x3 convs + ReLU, adaptive average pool, flatten, Linear
    h, mods = x, list(head)
    for conv in [m for m in mods if isinstance(m, nn.Conv2d)]:
        h = F.relu(F.conv2d(h, conv.weight, conv.bias, stride=2, padding=1))
    if len(shape) == 3:
        if h.shape[1:] != out_map:
            h = F.adaptive_avg_pool2d(h, out_map[1:])
        assert h.shape[1:] == out_map
    torch.testing.assert_close(head(x), F.linear(h.flatten(1), mods[-1].weight, mods[-1].bias))
    n = down_convs(shape, convs)
    assert head_config(head)[0] == n and (np.isnan(head_config(head)[1]) if n == 0 else
                                          head_config(head)[1] == channels)


def test_search_space_families_grow_in_memory_order():
    block = DecisionBlockParams(decision_convs=3, decision_channels=4)
    families = search_space(block, (8, 4, 4))
    assert families[0] == [replace(block, decision_convs=0)]
    assert [len(f) for f in families] == [1, 4, 4]  # 4x4 -> 2x2 -> 1x1: at most 2 down-convs
    assert families[2][-1] == replace(block, decision_convs=2, decision_channels=4)
    assert search_space(DecisionBlockParams(), (32,)) == [[DecisionBlockParams(decision_convs=0)]]


# --- dry memory ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,shape", [
    ({"model": "cnn", "depth": 3, "width": 4, "bn_variant": "bn", "optimizer": "adam"}, (1, 8, 8)),
    ({"model": "all_cnn_c", "width_scale": 0.05, "optimizer": "sgd", "momentum": 0.9}, (3, 12, 12)),  # dropout
    ({"model": "fnn", "depth": 2, "width": 16, "optimizer": "adam"}, (1, 8, 8)),
])
def test_extrapolated_memory_equals_the_direct_full_batch_measurement(overrides, shape):
    cell = make_cell(**overrides)
    model = build_model(cell, shape, 10)
    x, y = batch(shape, 37)
    direct = step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y)
    dry = extrapolated_step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y)
    assert dry.parts() == direct.parts() and np.isnan(dry.cuda)


# --- the search ----------------------------------------------------------------------------------------------------

def test_search_meets_the_target_and_equals_direct_step_memory():
    """The quick study's CNN at the thesis's 30 +- 0.5 %: the fitted heads' memory per stage, measured again at the
    full batch with `step_memory` (memory_profile), is what the search reports; the result is deterministic."""
    cell = cnn(memory_target=0.3)
    model = build_model(cell, (1, 8, 8), 10)
    x, y = batch((1, 8, 8), 256)
    fit = hs.fit_heads(cell, model, x, y, 10)
    assert abs(fit.relative_memory - 0.3) <= 0.005
    backprop, stages = hs.memory_profile(cell, model, x, y, 10, fit.heads)
    assert backprop.parts() == fit.backprop.parts()
    assert [m.parts() for m in stages] == [m.parts() for m in fit.memories]
    assert max(m.total for m in stages) / backprop.total == fit.relative_memory
    assert fit.heads[-1] is None and all(h.decision_convs >= 1 for h in fit.heads[:-1])
    assert hs.fit_heads(cell, model, x, y, 10).heads == fit.heads
    # the linear head sits below the target here (the last stage, the FC layer, too): the blocks use the budget
    linear_bp, linear = hs.memory_profile(changed(cell, layer_head="linear"), model, x, y, 10)
    assert max(m.total for m in linear) / linear_bp.total < 0.295


def test_search_picks_what_a_brute_force_enumeration_picks():
    cell = cnn(depth=3, width=4, batch_size=64, decision_channels=6, memory_target=0.45, memory_tolerance=0.02)
    model = build_model(cell, (1, 8, 8), 10)
    x, y = batch((1, 8, 8), 64)
    fit = hs.fit_heads(cell, model, x, y, 10)
    bp = step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y).total
    target, tol = 0.45 * bp, 0.02 * bp
    for i, window in enumerate(sn.windows(3, 1)[:-1]):
        shape = sn.window_shape(model, window[1], x)
        options = [head for family in search_space(cell[DecisionBlockParams], shape) for head in family]
        with sn.frozen(model):
            totals = [hs.measure_stage(cell.replace(head), model, i, window, False, 10, x, y).total
                      for head in options]
        within = [(abs(t - target), k) for k, t in enumerate(totals) if t <= target + tol]
        best = options[min(within)[1]] if within else options[int(np.argmin(totals))]
        assert totals[options.index(fit.heads[i])] == totals[options.index(best)], i


def test_the_search_leaves_the_model_as_it_was():
    """Stage networks put the feednet in eval mode; the search restores every module's mode and gradient flag, so a
    later measurement of the same model (ALL-CNN-C's dropout masks) is unchanged."""
    cell = make_cell(model="all_cnn_c", width_scale=0.05, training="layerwise", layer_head="decision_block",
                     memory_target=0.3, decision_channels=4, batch_size=8)
    model = build_model(cell, (3, 12, 12), 10)
    model.layers[0].requires_grad_(False)
    modes, flags = [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]
    x, y = batch((3, 12, 12), 8)
    before = step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y)
    hs.fit_heads(cell, model, x, y, 10)
    assert [m.training for m in model.modules()] == modes and [p.requires_grad for p in model.parameters()] == flags
    assert step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y).parts() == before.parts()


def test_an_unreachable_target_gives_the_smallest_heads_and_says_so():
    cell = cnn(depth=4, memory_target=0.01)
    model = build_model(cell, (1, 8, 8), 10)
    x, y = batch((1, 8, 8), 256)
    fit = hs.fit_heads(cell, model, x, y, 10)
    smallest = [replace(cell[DecisionBlockParams], decision_convs=1, decision_channels=1)] * 3 + [None]  # 1 channel
    assert fit.heads == smallest and fit.relative_memory > 0.1


def test_training_uses_the_fitted_heads_and_the_probe_confirms_the_memory(digits):
    cell = cnn(depth=4, memory_target=0.3, steps=4, layer_steps=2, log_every=2, eval_every=2, batch_size=128)
    torch.set_num_threads(1)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    x, y = first_batch(cell.run.batch_size, digits.train.x, digits.train.y)
    fit = hs.fit_heads(cell, model, x, y, digits.n_classes)
    ds = train_cell(cell, digits, model, torch.device("cpu"))[0]
    np.testing.assert_array_equal(ds["layer_peak_memory_bytes"].values, [m.total for m in fit.memories])
    assert float(ds["backprop_memory_bytes"]) == fit.backprop.total
    assert float(ds["relative_memory"]) == float(ds["search_relative_memory"]) == pytest.approx(
        fit.relative_memory, rel=1e-12)
    np.testing.assert_array_equal(ds["layer_decision_convs"].values[:-1], [h.decision_convs for h in fit.heads[:-1]])
    np.testing.assert_array_equal(ds["layer_decision_channels"].values[:-1],
                                  [h.decision_channels for h in fit.heads[:-1]])
    assert np.isnan(ds["layer_decision_convs"].values[-1]) and np.isfinite(ds["layer_test_acc"]).all()


def test_backprop_cells_report_relative_memory_one(digits):
    cell = make_cell(model="cnn", depth=2, width=4, steps=2, log_every=1, eval_every=2)
    ds = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"))[0]
    assert float(ds["relative_memory"]) == 1.0 and float(ds["backprop_memory_bytes"]) == float(
        ds["peak_memory_bytes"])


# --- config errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"model": "fnn", "depth": 3}, "layer_head 'decision_block' puts down-convs on conv feature maps, but no stage "
                                   "of model 'fnn'"),
    ({"model": "cnn", "depth": 1}, "no stage of model 'cnn' \\(0 conv layers"),
    ({"model": "cnn", "depth": 3, "training": "segmentwise", "segment_size": 3}, "segment_size 3"),
    ({"model": "cnn", "depth": 3, "layer_head": "linear", "memory_target": 0.3},
     "memory_target searches the configurations of the decision head; layer_head 'linear' has none "
     "\\(use layer_head 'decision_block'\\)"),
])
def test_bad_decision_block_configs_fail_early(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_cell(make_cell(**{"training": "layerwise", "layer_head": "decision_block", **overrides}))


def test_decision_options_are_ignored_under_backprop_and_typed_by_the_schema():
    check_cell(make_cell(model="fnn", layer_head="decision_block", memory_target=0.3))  # backprop: ignored
    check_cell(make_cell(model="cnn_3c3d", training="layerwise", layer_head="decision_block", memory_target=0.3))
    config = copy.deepcopy(TINY_STUDY)
    config["fixed"].update(memory_target=1.5)
    with pytest.raises(ConfigError, match=re.escape("fixed.memory_target: 1.5 is greater than the maximum of 1")):
        check_study(config)
    config["fixed"].update(memory_target=0.3, layer_head="decision_blocks")
    with pytest.raises(ConfigError, match="did you mean 'decision_block'"):
        check_study(config)


# --- the figure ----------------------------------------------------------------------------------------------------

def test_regime_memory_draws_one_bar_per_existing_regime_and_head():
    from layerlab.report.plots import figure

    parts = np.full((2, 2, 1, 2), np.nan)  # training x layer_head x seed x memory_part
    parts[0, 0, 0], parts[1, 0, 0], parts[1, 1, 0] = [4e6, 6e6], [2e6, 1e6], [2e6, 1e6 + 1e6]
    acc = np.array([[[0.9], [np.nan]], [[0.8], [0.85]]])
    ds = xr.Dataset(
        {"peak_memory_parts": (("training", "layer_head", "seed", "memory_part"), parts),
         "test_acc": (("training", "layer_head", "seed"), acc)},
        coords={"training": np.array(["backprop", "layerwise"], dtype=object),
                "layer_head": np.array(["linear", "decision_block"], dtype=object), "seed": [0],
                "memory_part": np.array(["activations", "parameters"], dtype=object)})
    fig = figure(ds, {"kind": "regime_memory", "x": "training", "hue": "layer_head"})
    left, right = fig.axes
    assert [t.get_text() for t in left.texts] == ["10.00 MB\n(100%)", "3.00 MB\n(30%)", "4.00 MB\n(40%)"]
    assert [t.get_text() for t in left.get_xticklabels()] == ["backprop\nlinear", "layerwise\nlinear",
                                                             "layerwise\ndecision_block"]
    assert [t.get_text() for t in right.get_xticklabels()] == [t.get_text() for t in left.get_xticklabels()]


@pytest.mark.e2e
def test_decision_block_study_end_to_end(tmp_path):
    study = {
        "study": "tiny_decision_blocks",
        "grid": {"training": ["backprop", "layerwise"], "layer_head": ["linear"]},
        "cells": [{"training": "layerwise", "layer_head": "decision_block", "memory_target": 0.3}],
        "fixed": {"dataset": "digits", "model": "cnn", "depth": 10, "width": 8, "optimizer": "sgd", "lr": 0.05,
                  "momentum": 0.9, "batch_size": 256, "steps": 20, "layer_steps": 2, "log_every": 2,
                  "eval_every": 2, "decision_convs": 2, "decision_channels": 256},
        "plots": [{"name": "memory", "kind": "regime_memory", "x": "training", "hue": "layer_head"}],
        "claims": [{"name": "meets_target", "source": "test", "paper": "30 +- 0.5 %", "metric": "relative_memory",
                    "select": {"training": "layerwise", "layer_head": "decision_block"}, "op": "between",
                    "value": [0.295, 0.305]}],
    }
    write_study(tmp_path, study)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_decision_blocks"
    ds = read_store(out / "metrics.zarr")
    rel = ds["relative_memory"]
    assert float(rel.sel(training="backprop", layer_head="linear")) == 1.0
    assert np.isnan(float(rel.sel(training="backprop", layer_head="decision_block")))  # not a cell
    db = ds.sel(training="layerwise", layer_head="decision_block")
    bp = float(ds["peak_memory_bytes"].sel(training="backprop", layer_head="linear"))
    assert float(db["relative_memory"]) == pytest.approx(float(db["peak_memory_bytes"]) / bp, rel=1e-12)
    assert float(db["relative_memory"]) == pytest.approx(float(db["search_relative_memory"]), rel=1e-12)
    assert (db["layer_decision_convs"].values[:-1] >= 1).all()
    claims = pd.read_csv(out / "claims.csv")
    assert claims.set_index("name").loc["meets_target", ["verdict", "note"]].tolist() == [
        "unreplicated", "one seed: its value satisfies the claim"]
    assert (out / "figures/memory.png").stat().st_size > 10_000
