"""Training loop: recorded shapes, collapse signature, divergence as a result, determinism, stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import changed, make_cell

from layerlab.core.store import combine_cells, read_store, stored_cells, to_table, write_store
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell


def run(cell, data):
    torch.set_num_threads(1)
    return train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), torch.device("cpu"))[0]


def test_records_per_layer_and_per_step(digits):
    cell = make_cell(depth=4, width=16, steps=25, log_every=10, eval_every=20, loss="ce_lbe", lr=1e-3)
    ds = run(cell, digits)
    assert list(ds["step"].values) == [0, 10, 20, 25] and list(ds["eval_step"].values) == [0, 20, 25]
    assert ds["batch_entropy"].shape == (4, 4) and ds["alpha"].shape == (4, 4)
    assert np.isnan(ds["alpha"][:, [0, 3]]).all() and np.isfinite(ds["alpha"][:, [1, 2]]).all()
    assert np.isfinite(ds["lbe"]).all() and (ds["loss"] >= ds["ce"]).all()
    assert float(ds["test_acc"]) == pytest.approx(float(ds["test_acc_curve"][-1])) and not ds["diverged"]


def test_deep_default_init_collapses_to_zero_entropy(digits):
    """Paper 000: a 30-layer vanilla ReLU net with PyTorch's default init has H = 0 from mid-net on."""
    ds = run(make_cell(depth=30, width=64, steps=1, log_every=1), digits)
    h = ds["batch_entropy"].isel(step=0).values
    assert h[0] > 0.1 and (h[15:] < 1e-4).all()
    assert ds["test_acc"] < 0.2


def test_divergence_is_a_result(digits):
    ds = run(make_cell(depth=3, width=16, optimizer="sgd", lr=1e12, steps=50, log_every=10), digits)
    assert bool(ds["diverged"]) and 1 <= int(ds["diverged_step"]) <= 50
    assert int(ds["step"][-1]) == int(ds["diverged_step"]) and not np.isfinite(ds["loss"][-1])
    assert 0 <= float(ds["test_acc"]) <= 0.2


def test_a_non_finite_final_loss_is_divergence(digits):
    """Every batch loss finite, the final network's test loss NaN (lr 1e6: some test inputs overflow): diverged, at
    the last step."""
    ds = run(make_cell(depth=2, width=16, optimizer="sgd", lr=1e6, steps=30, batch_size=64, log_every=10,
                       eval_every=15), digits)
    assert np.isfinite(ds["loss"]).all() and not np.isfinite(float(ds["test_loss"]))
    assert bool(ds["diverged"]) and int(ds["diverged_step"]) == 30


def test_same_seed_identical_metrics_other_seed_differs(digits):
    cell = make_cell(depth=3, width=16, steps=20, log_every=5, loss="ce_lbe", lr=1e-3)
    a, b = run(cell, digits), run(cell, digits)
    xr.testing.assert_identical(a.drop_vars("train_seconds"), b.drop_vars("train_seconds"))
    c = run(changed(cell, seed=1), digits)
    assert not np.array_equal(a["batch_entropy"].values, c["batch_entropy"].values)


def test_store_roundtrip_is_atomic_and_combines(tmp_path, digits):
    cells = {}
    params = {"d~2": {"d": 2}, "d~3": {"d": 3}}
    for cid, p in params.items():
        ds = run(make_cell(depth=p["d"], width=8, steps=5, log_every=5), digits)
        ds.attrs["config"] = cid
        write_store(ds, tmp_path / f"{p['d']}.zarr")
        write_store(ds, tmp_path / f"{p['d']}.zarr")  # overwrite in place
        cells[cid] = read_store(tmp_path / f"{p['d']}.zarr")
        xr.testing.assert_identical(cells[cid], ds)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["2.zarr", "3.zarr"]  # no temp dirs left
    study = combine_cells(cells, params, ["d"])
    assert study["batch_entropy"].dims == ("d", "step", "layer") and study.sizes["layer"] == 3
    assert np.isnan(study["batch_entropy"].sel(d=2, layer=2)).all()
    assert study["config"].dtype == object and list(study["config"].values) == ["d~2", "d~3"]


def test_table_has_one_row_per_cell_stored_or_not_a_bool_axis_included(tmp_path):
    """A grid hole is NaN in memory and "" once stored; a single bool axis is labels, not a mask."""
    acc = xr.DataArray([[0.9, np.nan], [0.5, 0.7]], dims=("bn", "d"), coords={"bn": [False, True], "d": [2, 3]})
    config = xr.DataArray(np.array([["a", np.nan], ["b", "c"]], dtype=object), dims=("bn", "d"), coords=acc.coords)
    study = xr.Dataset({"test_acc": acc, "config": config})
    write_store(study, tmp_path / "study.zarr")
    for ds in (study, read_store(tmp_path / "study.zarr")):
        assert to_table(ds, ["bn", "d"]).values.tolist() == [[False, 2, 0.9], [True, 2, 0.5], [True, 3, 0.7]]
        assert stored_cells(ds).tolist() == ["a", "b", "c"]
    single = study.isel(d=0, drop=True)
    assert to_table(single, ["bn"]).values.tolist() == [[False, 0.9], [True, 0.5]]  # was one row: a mask


def test_plots_draw_the_cells_that_have_data():
    from layerlab.report.plots import figure

    steps, layers = [0, 10, 20], [0, 1, 2, 3]
    alpha = np.full((2, 2, 3, 4), np.nan)
    alpha[:, 1, :, 1:3] = 0.2  # only LBE cells, middle layers
    ds = xr.Dataset(
        {"alpha": (("depth", "loss", "step", "layer"), alpha),
         "test_acc": (("depth", "loss", "seed"), np.array([[[0.9, 0.8], [0.9, 0.95]], [[0.1, 0.1], [0.7, 0.9]]]))},
        coords={"depth": [3, 4], "loss": np.array(["ce", "ce_lbe"], dtype=object), "seed": [0, 1], "step": steps,
                "layer": layers},
    )
    fig = figure(ds.sel(loss="ce_lbe"), {"kind": "layer_trajectories", "var": "alpha", "col": "depth"})
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    fig = figure(ds, {"kind": "layer_step_heatmap", "var": "alpha", "row": "loss", "col": "depth"})
    assert [len(ax.collections) for ax in fig.axes[:4]] == [0, 0, 1, 1]  # ce panels say "no data"
    fig = figure(ds, {"kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "hue": "loss"})
    line = fig.axes[0].lines[1]  # ce_lbe: mean over seeds
    np.testing.assert_allclose(line.get_ydata(), [0.925, 0.8])
