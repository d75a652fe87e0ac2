"""End-to-end: a tiny cascade study (paper 003) through the real workflow."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import snakemake, write_study

from layerlab.core.store import read_store

pytestmark = pytest.mark.e2e

STUDY = {
    "study": "tiny_cascade",
    "grid": {"sigma_w2": [0.5, 1.76], "depth": [3, 6]},
    "fixed": {"dataset": "digits", "input_scaling": "unit", "width": 16, "activation": "tanh", "init": "gaussian",
              "sigma_b2": 0.05, "optimizer": "sgd", "lr": 1e-3, "batch_size": 64, "steps": 20, "log_every": 10,
              "eval_every": 10, "cascade_epochs": 1, "cascade_images": 2},
    "measurements": ["cascade"],
    "trainability": {"metric": "train_acc", "threshold": 0.3},
    "plots": [
        {"name": "phase", "kind": "phase_diagram", "metric": "train_acc"},
        {"name": "entropy", "kind": "layer_curves", "var": "re_diff_entropy", "hue": "sigma_w2",
         "select": {"depth": 6}},
        {"name": "recon", "kind": "reconstructions", "row": "sigma_w2", "layers": [0, 5], "select": {"depth": 6}},
    ],
}


def test_cascade_runs_on_the_deepest_cell_and_predicts_all(tmp_path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_cascade"
    assert sorted(p.parent.name for p in out.rglob("cascade.zarr")) == ["depth~6", "depth~6"]
    ds = read_store(out / "metrics.zarr")
    assert ds["re_diff_entropy"].dims == ("sigma_w2", "depth", "layer") and ds.sizes["layer"] == 6
    # both depths of a sigma_w2 share the deepest network's cutoff; the prediction compares it with each depth
    for sw2 in (0.5, 1.76):
        cut = ds["cutoff_depth"].sel(sigma_w2=sw2)
        assert float(cut.sel(depth=3)) == float(cut.sel(depth=6))
        cut_s = ds["cutoff_depth_diff_entropy"].sel(sigma_w2=sw2)
        for depth in (3, 6):
            assert bool(ds["predicted_trainable"].sel(sigma_w2=sw2, depth=depth)) == (depth <= float(cut.sel(depth=6)))
            assert bool(ds["predicted_trainable_diff_entropy"].sel(sigma_w2=sw2, depth=depth)) == (
                depth <= float(cut_s.sel(depth=6)))
    assert ds["cost_ratio"].sel(depth=3).isnull().all() and (ds["cost_ratio"].sel(depth=6) > 0).all()
    # one cascade epoch (cascade_epochs 1) in epochs of training: 20 steps, 1437 digits at batch 64
    deep = ds.sel(depth=6)
    epoch = deep["train_seconds"] / 20 * 1437 / 64
    assert int(deep["train_rows"][0]) == 1437
    assert ds["cascade_epoch_cost"].sel(depth=3).isnull().all()
    assert deep["cascade_epoch_cost"].values == pytest.approx((deep["cascade_seconds"] / epoch).values)
    summary = pd.read_csv(out / "study_summary.csv")
    agree = ds["prediction_agrees"].values.mean()
    assert summary.loc[0, "cells"] == 4 and summary.loc[0, "agreement"] == pytest.approx(agree)
    assert ds.attrs["agreement"] == pytest.approx(agree)
    assert summary.loc[0, "agreement_diff_entropy"] == pytest.approx(ds["prediction_agrees_diff_entropy"].mean())
    both = (ds["predicted_trainable"] == ds["predicted_trainable_diff_entropy"]).mean()
    assert summary.loc[0, "predictors_agreement"] == pytest.approx(float(both))
    assert {"cutoff_depth", "predicted_trainable", "trainable", "cost_ratio"} <= set(pd.read_csv(out / "summary.csv"))
    for name in ("phase", "entropy", "recon"):
        assert (out / f"figures/{name}.png").stat().st_size > 10_000


def test_cascade_needs_a_network_it_can_reconstruct(tmp_path):
    write_study(tmp_path, {**STUDY, "fixed": {**STUDY["fixed"], "model": "cnn"}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "cascade probe reconstructs fully connected or plain conv layers" in proc.stderr
    assert "needs model fnn or cascade_cnn or cascade_resnet without BN (got 'cnn'" in proc.stderr
