"""End-to-end: a tiny paper-001 (ch. 3-4) study through the real workflow: output heads as the `loss` axis, the
gradient-RMS and weight-entropy probes, the compression, their figures; bad head values stop before any job."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import snakemake, write_study

from layerlab.core.store import read_store

pytestmark = pytest.mark.e2e

STUDY = {
    "study": "tiny_ga",
    "grid": {"loss": ["ce", "exp_ga"], "quantize_bits": [0, 4]},
    "fixed": {"dataset": "digits", "depth": 2, "widths": [24, 12], "optimizer": "sgd", "lr": 1e-3,
              "batch_size": 64, "steps": 20, "log_every": 10, "eval_every": 10, "grad_rms_probe": True,
              "weight_entropy_bits": 4, "quantize_every": 5},
    "plots": [
        {"name": "grad_init", "kind": "layer_profile", "var": "grad_rms", "hue": "loss", "logy": True, "steps": [0],
         "select": {"quantize_bits": 0}},
        {"name": "grad_steps", "kind": "layer_trajectories", "var": "grad_rms", "col": "loss", "row": "quantize_bits",
         "logy": True},
        {"name": "entropy", "kind": "layer_profile", "var": "weight_entropy", "hue": "quantize_bits", "row": "loss"},
    ],
}


def test_heads_and_layer_probes_run_end_to_end(tmp_path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_ga"
    ds = read_store(out / "metrics.zarr")
    for var in ("grad_rms", "weight_entropy", "huffman_bits"):
        assert ds[var].dims == ("loss", "quantize_bits", "step", "layer") and ds.sizes["layer"] == 3
    init = ds["grad_rms"].sel(step=0, quantize_bits=0)
    assert (init.sel(loss="exp_ga") > 10 * init.sel(loss="ce")).all()  # amplified in every layer
    # same init weights for every head: identical weight entropy at step 0
    h0 = ds["weight_entropy"].sel(step=0)
    assert np.allclose(h0, h0.isel(loss=0, quantize_bits=0)) and (h0 <= 4).all()
    assert np.isfinite(ds["test_acc"]).all() and not ds["diverged"].any()
    for name in ("grad_init", "grad_steps", "entropy"):
        assert (out / f"figures/{name}.png").stat().st_size > 10_000


@pytest.mark.parametrize(("fixed", "message"), [
    ({"loss": "softmax"}, "softmax"),
    ({"weight_entropy_bits": 17}, "weight_entropy_bits"),
    ({"loss": "sigmoid", "target_on": 2}, "needs targets in [0.0, 1.0]"),
])
def test_bad_head_and_probe_values_stop_before_any_job(tmp_path, fixed, message):
    study = {"study": "bad_ga", "grid": {"seed": [0]}, "fixed": {"dataset": "digits", "depth": 2, "width": 8,
                                                                 "steps": 2, **fixed}}
    write_study(tmp_path, study)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
