"""Layer-wise / segment-wise training (paper 001, Ch. 6) and the peak-memory probe: references and e2e."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import changed, make_cell, snakemake, write_study
from torch import nn
from torch.nn import functional as F

import layerlab.training.head_search as hs
import layerlab.training.records as tr
import layerlab.training.regimes.stage_nets as sn
from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.core.registry import MODELS
from layerlab.core.store import read_store
from layerlab.nets.models import build_model
from layerlab.probes.memory import StepMemory, first_batch, step_memory
from layerlab.training.loop import train_cell
from layerlab.training.memory import SavedTensors, ce_step_loss, storage_bytes
from layerlab.training.optim import make_optimizer

F32 = 4



def backprop_step(cell: dict, model: nn.Module, data) -> StepMemory:
    """The memory of one backprop step on the cell's first batch (what the memory probe measures)."""
    return step_memory(model, ce_step_loss, lambda params: make_optimizer(cell.optimizer, params),
                       *first_batch(cell.run.batch_size, data.train.x, data.train.y))


def run(cell: dict, data) -> xr.Dataset:
    torch.set_num_threads(1)
    return train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), torch.device("cpu"))[0]


def small(**overrides) -> dict:
    return make_cell(**{"depth": 3, "width": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "steps": 20,
                        "log_every": 5, "eval_every": 10, "training": "layerwise", **overrides})


# --- forward and backward dropout --------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.3, 0.6])
def test_grad_dropout_masks_and_rescales_only_the_gradient(p):
    h = torch.randn(400, 500, requires_grad=True)
    out = sn.grad_dropout(h, p, torch.Generator().manual_seed(3))
    assert torch.equal(out, h)  # forward untouched
    upstream = torch.randn_like(h)
    out.backward(upstream)
    # independent reference: the same seeded uniforms, kept where >= p, scaled by 1 / (1 - p)
    keep = torch.rand(h.shape, generator=torch.Generator().manual_seed(3)) >= p
    torch.testing.assert_close(h.grad, torch.where(keep, upstream / (1 - p), torch.zeros(())))
    dropped = float((h.grad == 0).float().mean())
    assert dropped == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / h.numel()))


def test_grad_dropout_is_identity_at_zero_and_unbiased():
    h = torch.randn(8, requires_grad=True)
    assert sn.grad_dropout(h, 0.0) is h and sn.dropout(h, 0.0) is h
    p, draws = 0.6, 20_000
    g = torch.linspace(-1, 2, 50)
    x = torch.zeros(draws, 50, requires_grad=True)
    sn.grad_dropout(x, p, torch.Generator().manual_seed(0)).backward(g.expand(draws, 50))
    sd = g.abs() * math.sqrt(p / (1 - p) / draws)  # sd of the mean of mask * g / (1 - p)
    assert ((x.grad.mean(0) - g).abs() <= 5 * sd + 1e-7).all()


def test_input_dropout_scales_kept_entries_and_keeps_the_mean():
    x = torch.full((300, 400), 2.0)
    out = sn.dropout(x, 0.25, torch.Generator().manual_seed(1))
    torch.testing.assert_close(torch.unique(out), torch.tensor([0.0, 2.0 / 0.75]))
    assert float(out.mean()) == pytest.approx(2.0, abs=5 * 2.0 * math.sqrt(0.25 / 0.75 / x.numel()))


def test_stage_gradient_matches_a_hand_computed_masked_backward():
    """dL/dW of the trained Linear+ReLU layer with gradient dropout = the masked chain rule done by hand."""
    torch.manual_seed(0)
    model = build_model(make_cell(depth=2, width=6), (1, 2, 3), 4)
    head = sn.make_head(make_cell(), (6,), 4, stage=1)
    stage = sn.StageNet(model, 1, 2, head)
    x, y, p = torch.randn(10, 1, 2, 3), torch.randint(0, 4, (10,)), 0.5
    loss = F.cross_entropy(stage(x, sn.Noise(0.0, p, torch.Generator().manual_seed(9)))[0], y)
    loss.backward()
    layer = model.layers[1]
    with torch.no_grad():
        a_in = torch.relu(model.layers[0](x.flatten(1)))  # frozen features
        pre = layer(a_in)
        h = torch.relu(pre)
    h = h.requires_grad_()
    F.cross_entropy(head(h), y).backward()
    keep = torch.rand(h.shape, generator=torch.Generator().manual_seed(9)) >= p
    delta = h.grad * keep / (1 - p) * (pre > 0)
    torch.testing.assert_close(layer.weight.grad, delta.T @ a_in)
    assert model.layers[0].weight.grad is None  # frozen: no gradient at all


# --- stages, schedules, frozen layers ------------------------------------------------------------------------------

def test_windows_slide_with_overlap_k_minus_1():
    assert sn.windows(4, 1) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert sn.windows(4, 2) == [(0, 2), (1, 3), (2, 4)]
    assert sn.windows(4, 4) == [(0, 4)]
    with pytest.raises(ValueError, match="segment_size 5"):
        sn.windows(4, 5)


def test_per_stage_lr_and_wd_follow_the_thesis_schedule(digits):
    ds = run(small(layer_lr_decay=0.8, layer_wd_growth=1.15, weight_decay=1e-4, layer_steps=5), digits)
    np.testing.assert_allclose(ds["layer_lr"], 0.05 * 0.8 ** np.arange(3))
    np.testing.assert_allclose(ds["layer_weight_decay"], 1e-4 * 1.15 ** np.arange(3))
    seg = run(small(training="segmentwise", segment_size=2, layer_lr_decay=0.8, layer_steps=5), digits)
    np.testing.assert_allclose(seg["layer_lr"], [np.nan, 0.05, 0.04])  # windows (0, 1), (1, 2) end at layers 1, 2
    assert list(seg["stage"].values) == [0, 1, 1] and list(seg["step"].values) == [0, 5, 10]


def test_frozen_layers_keep_weights_and_bn_statistics(digits, monkeypatch):
    """Snapshot the whole network at the end of every stage: layers below the window never change afterwards
    (BatchNorm running statistics included: the feednet runs in eval mode); the window's layer does change."""
    snapshots: list[tuple[int, list[dict]]] = []
    real = tr.evaluate

    def spy(net, split):
        if isinstance(net, sn.StageNet):
            snapshots.append((len(net.frozen), [{k: v.clone() for k, v in layer.state_dict().items()}
                                                for layer in model.layers]))
        return real(net, split)

    monkeypatch.setattr(tr, "evaluate", spy)
    cell = small(bn_variant="bn", layer_steps=10, eval_every=10, input_dropout=0.2, grad_dropout=0.3)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    init = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in model.layers]
    train_cell(cell, digits, model, torch.device("cpu"))
    ends = {stage: layers for stage, layers in snapshots}  # the last snapshot of each stage (its end)
    assert sorted(ends) == [0, 1, 2]
    for stage, layers in ends.items():
        for j in range(3):
            for key, value in layers[j].items():
                if j < stage:  # frozen: as at the end of its own stage
                    assert torch.equal(value, ends[j][j][key]), (stage, j, key)
                elif j > stage:  # not trained yet: still the init
                    assert torch.equal(value, init[j][key]), (stage, j, key)
        assert not torch.equal(layers[stage]["0.weight"], init[stage]["0.weight"])


def test_stage_network_modes_and_trainable_parameters():
    cell = make_cell(depth=3, width=8, bn_variant="bn")
    model = build_model(cell, (1, 4, 4), 3).requires_grad_(False)
    stage = sn.stage_network(cell, model, 1, (1, 3), False, 3, torch.randn(5, 1, 4, 4))
    assert not stage.frozen.training and stage.trained.training and stage.head.training
    assert [p.requires_grad for p in model.layers[0].parameters()] == [False, False]
    assert all(p.requires_grad for p in [*model.layers[1].parameters(), *model.layers[2].parameters()])
    assert stage.head is not model.head and not any(p.requires_grad for p in model.head.parameters())
    evaluate_mode = stage.eval().train()  # what train.evaluate does around its loop
    assert not evaluate_mode.frozen.training and evaluate_mode.trained.training


def test_store_fields_and_final_network(digits):
    cell = small(layer_steps=40, log_every=20, eval_every=40)
    ds = run(cell, digits)
    assert list(ds["step"].values) == [0, 20, 40, 60, 80, 100, 120]  # one global step counter
    assert list(ds["stage"].values) == [0, 0, 1, 1, 2, 2, 2] and list(ds["eval_step"].values) == [0, 40, 80, 120]
    acc = ds["layer_test_acc"].values
    assert np.isfinite(acc).all() and float(ds["test_acc"]) == pytest.approx(float(acc[-1]))
    assert int(ds["peak_layer"]) == int(np.argmax(acc)) and float(ds["peak_test_acc"]) == pytest.approx(acc.max())
    assert float(ds["test_acc"]) > 0.5 and not bool(ds["diverged"])
    assert {"train_acc", "train_loss", "test_loss", "test_error", "train_seconds"} <= set(ds.data_vars)
    # the final network is the architecture itself: evaluating the returned model gives the stored accuracy
    model = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes),
                               torch.device("cpu"))[1]
    assert tr.evaluate(model, digits.test)[0] == pytest.approx(float(ds["test_acc"]))
    assert all(p.requires_grad for p in model.parameters())


def test_same_seed_identical_metrics_other_seed_differs(digits):
    cell = small(training="segmentwise", segment_size=2, input_dropout=0.3, grad_dropout=0.5, layer_steps=8)
    a, b = run(cell, digits), run(cell, digits)
    xr.testing.assert_identical(a.drop_vars("train_seconds"), b.drop_vars("train_seconds"))
    c = run(changed(cell, seed=1), digits)
    assert not np.array_equal(a["loss"].values, c["loss"].values)


def test_divergence_is_a_result(digits):
    ds = run(small(lr=1e12, layer_steps=20), digits)
    assert bool(ds["diverged"]) and int(ds["step"][-1]) == int(ds["diverged_step"])
    assert np.isnan(ds["layer_test_acc"][-1]) and float(ds["test_acc"]) <= 0.3


# --- memory ------------------------------------------------------------------------------------------------------

def mlp_closed_form(n_in: int, widths: list[int], n_classes: int, batch: int, window: tuple[int, int] | None,
                    head_in: int | None = None) -> int:
    """Bytes of one SGD-momentum step, counted by hand (float32, int64 labels). `window`: layer-wise stage
    [start, stop) with a fresh Linear head (None: backprop). Saved for backward: the trained window's input
    (unless it is the batch itself), every trained ReLU output, log_softmax's output and nll_loss's scalar
    total_weight. Resident: feednet + window + head parameters; gradients and momentum: window + head."""
    sizes = [n_in, *widths]
    layer_params = [(a + 1) * b for a, b in itertools.pairwise(sizes)]
    start, stop = (0, len(widths)) if window is None else window
    head = (widths[stop - 1] + 1) * n_classes
    trained = sum(layer_params[start:stop]) + head
    resident = sum(layer_params[:stop]) + head
    saved = (0 if start == 0 else sizes[start]) + sum(widths[start:stop]) + n_classes
    batch_bytes = batch * (n_in * F32 + 8)
    return F32 * (batch * saved + 1) + F32 * (resident + 2 * trained) + batch_bytes


def test_saved_tensor_tracker_dedups_views_and_counts_storages():
    x = torch.randn(5, 4, requires_grad=True)
    with SavedTensors() as saved:
        y = (x * 2).relu()  # mul saves nothing for a scalar factor; relu saves its output
        z = y.view(20).sin()  # sin saves its input: a view of y's storage
    z.sum().backward()
    assert storage_bytes(saved.tensors) == 5 * 4 * F32
    assert storage_bytes([x, x[1:], x.T]) == 5 * 4 * F32


@pytest.mark.parametrize("widths,batch", [([3, 3], 5), ([64, 48, 32, 16], 32)])
def test_memory_matches_the_closed_form_and_layerwise_ratio(digits, widths, batch):
    depth, n_in, n_classes = len(widths), math.prod(digits.input_shape), digits.n_classes
    cell = make_cell(depth=depth, widths=widths, optimizer="sgd", momentum=0.9, lr=0.01, batch_size=batch,
                     steps=1, layer_steps=1, log_every=1, eval_every=1)
    model = build_model(cell, digits.input_shape, n_classes)
    bp = backprop_step(cell, model, digits).total
    assert bp == mlp_closed_form(n_in, widths, n_classes, batch, None)
    ds = train_cell(changed(cell, training="layerwise"), digits, model, torch.device("cpu"))[0]
    expected = [mlp_closed_form(n_in, widths, n_classes, batch, (i, i + 1)) for i in range(depth)]
    np.testing.assert_array_equal(ds["layer_peak_memory_bytes"].values, expected)
    assert float(ds["peak_memory_bytes"]) == max(expected) < bp
    assert float(ds["peak_memory_bytes"]) / bp == pytest.approx(max(expected) / bp, rel=1e-12)
    # the no-training profile (bench/layerwise_memory.py, the notes' E6b) measures the same steps
    x, y = first_batch(cell.run.batch_size, digits.train.x, digits.train.y)
    profile_bp, profile = hs.memory_profile(changed(cell, training="layerwise"), model, x, y, n_classes)
    assert profile_bp.total == bp and [m.total for m in profile] == expected
    parts = ds["peak_memory_parts"]
    assert float(parts.sum()) == max(expected) and float(parts.sel(memory_part="batch")) == batch * (n_in * 4 + 8)
    assert np.isnan(ds["cuda_peak_memory_bytes"])


def test_memory_of_adam_counts_two_moments_and_step_counters():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    params = sum(p.numel() for p in model.parameters())
    x, y = torch.randn(7, 6), torch.randint(0, 2, (7,))
    memory = step_memory(model, lambda net, a, b: F.cross_entropy(net(a), b),
                         lambda ps: make_optimizer(make_cell(optimizer="adam").optimizer, ps), x, y)
    assert memory.optimizer_state == F32 * (2 * params + 4)  # exp_avg, exp_avg_sq + a float32 `step` per tensor
    assert memory.gradients == memory.parameters == F32 * params
    assert memory.activations == F32 * (7 * (5 + 2) + 1) and memory.batch == 7 * (6 * F32 + 8)
    assert all(p.grad is None for p in model.parameters())  # measured on a copy


def test_memory_measurement_leaves_the_run_untouched(digits):
    """The backprop memory step runs on a copy with the RNG state restored: same metrics with or without it."""
    cell = make_cell(depth=2, width=8, steps=5, log_every=5, lr=1e-3)
    a = run(cell, digits)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    backprop_step(cell, model, digits)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert float(a["peak_memory_bytes"]) > 0 and "layer_test_acc" not in a


# --- config errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"training": "segmentwise", "segment_size": 4, "depth": 3}, "segment_size 4 exceeds the 3 hidden layers"),
    ({"training": "segmentwise", "segment_size": 6, "model": "cnn_3c3d"}, "exceeds the 5 hidden layers"),
    ({"training": "layerwise", "segment_size": 2}, "use training 'segmentwise'"),
    ({"training": "layerwise", "model": "resnet", "depth": 20}, "needs a plain stack of layers"),
    ({"training": "layerwise", "loss": "mse"}, "loss 'mse' is only available with backprop"),
    ({"training": "segmentwise", "curvature_every": 5},
     "training probe 'curvature' \\(switched on by curvature_every\\) does not run with training 'segmentwise'"),
    ({"training": "layerwise", "quantize_bits": 4}, "probe 'weight_compression' .* runs with training 'backprop'"),
    ({"training": "layerwise", "depth": 3, "freeze_weights": "1101"},
     "freeze_weights .* is an option of training 'backprop'"),
])
def test_bad_combinations_fail_early(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_cell(make_cell(**overrides))


def test_fixed_depth_table_matches_the_models():
    for spec in MODELS.values():
        if spec.stack:
            cell = make_cell(model=spec.name, width=4, depth=3)
            assert len(build_model(cell, (3, 32, 32), 10).layers) == spec.hidden_layers(cell)
    check_cell(make_cell(training="segmentwise", segment_size=8, model="all_cnn_c"))


# --- plots and the workflow --------------------------------------------------------------------------------------

def test_layer_accuracy_plot_draws_backprop_as_a_reference():
    from layerlab.report.plots import figure

    acc = np.full((2, 2, 3), np.nan)
    acc[1] = [[0.7, 0.8, 0.85], [0.72, 0.82, 0.87]]
    ds = xr.Dataset(
        {"layer_test_acc": (("training", "seed", "layer"), acc),
         "test_acc": (("training", "seed"), np.array([[0.84, 0.86], [0.85, 0.87]])),
         "peak_memory_parts": (("training", "seed", "memory_part"), np.array([[[4e6, 2e6]] * 2, [[1e6, 1e6]] * 2]))},
        coords={"training": np.array(["backprop", "layerwise"], dtype=object), "seed": [0, 1], "layer": [0, 1, 2],
                "memory_part": np.array(["activations", "parameters"], dtype=object)},
    )
    ax = figure(ds, {"kind": "layer_accuracy"}).axes[0]
    reference = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(reference) == 1 and reference[0].get_ydata()[0] == pytest.approx(0.85)
    curve = next(line for line in ax.lines if len(line.get_xdata()) == 3)
    np.testing.assert_allclose(curve.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(curve.get_ydata(), [0.71, 0.81, 0.86])
    left = figure(ds, {"kind": "regime_memory"}).axes[0]
    assert [t.get_text() for t in left.texts] == ["6.00 MB\n(100%)", "2.00 MB\n(33%)"]


@pytest.mark.e2e
def test_backprop_vs_layerwise_study_end_to_end(tmp_path):
    study = {
        "study": "tiny_layerwise",
        "grid": {"training": ["backprop", "layerwise"]},
        "fixed": {"dataset": "digits", "depth": 3, "width": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                  "steps": 30, "layer_steps": 10, "log_every": 10, "eval_every": 10, "grad_dropout": 0.3},
        "plots": [{"name": "layer_accuracy", "kind": "layer_accuracy", "var": "layer_test_acc", "hue": "training"},
                  {"name": "memory", "kind": "regime_memory", "x": "training"}],
    }
    write_study(tmp_path, study)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_layerwise"
    ds = read_store(out / "metrics.zarr")
    assert ds["layer_test_acc"].dims == ("training", "layer")
    assert ds["layer_test_acc"].sel(training="backprop").isnull().all()
    assert np.isfinite(ds["layer_test_acc"].sel(training="layerwise")).all()
    bp, lay = (float(ds["peak_memory_bytes"].sel(training=t)) for t in ("backprop", "layerwise"))
    assert 0 < lay < bp
    assert ds["layer_peak_memory_bytes"].sel(training="backprop").isnull().all()
    table = pd.read_csv(out / "summary.csv")
    assert {"peak_memory_bytes", "peak_layer", "peak_test_acc", "test_acc"} <= set(table.columns)
    for name in ("layer_accuracy", "memory"):
        assert (out / f"figures/{name}.png").stat().st_size > 10_000
    dry = snakemake(tmp_path, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
