"""Representation measures during training (paper 001 ch. 5, training probe `representation_dynamic`): equal to the
post-training measurement on the same networks and rows (and to sklearn's neighbours on the input), at the chosen
steps; training is unchanged by the probe (same loss curve, weights, BatchNorm statistics, RNG); config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import changed, make_cell, snakemake, write_study
from sklearn.neighbors import NearestNeighbors

from layerlab.catalog import check_cell
from layerlab.catalog.measurements import REPRESENTATION_PER_LAYER
from layerlab.core.config import ConfigError
from layerlab.core.store import read_store
from layerlab.measurements.representation import balanced_subset, run_representation
from layerlab.nets.models import build_model
from layerlab.probes.base import StepState
from layerlab.probes.representation_dynamic import RepresentationDynamicProbe
from layerlab.training.loop import train_cell

CELL = dict(depth=3, widths=[32, 16, 8], steps=30, log_every=10, eval_every=10, optimizer="sgd", lr=0.05,
            momentum=0.9, batch_size=64, representation_samples=300, representation_k=5)


def train(cell: dict, data, model=None):
    torch.set_num_threads(1)
    model = model or build_model(cell, data.input_shape, data.n_classes)
    return train_cell(cell, data, model, torch.device("cpu"))


def test_measures_at_the_chosen_steps_equal_the_measurement_of_init_and_final(digits):
    cell = make_cell(**CELL, representation_every=20, representation_at=[5])
    init = build_model(cell, digits.input_shape, digits.n_classes)
    reference_init = run_representation(cell, digits, {"init": init}, torch.device("cpu"))
    ds, trained = train(cell, digits, init)
    reference_final = run_representation(cell, digits, {"final": trained}, torch.device("cpu"))
    assert ds["k_redundancy_dynamic"].dims == ("step", "rep_layer") and ds.sizes["rep_layer"] == 5
    measured = ds["lsd_train_dynamic"].dropna("step", how="all")["step"].values.tolist()
    assert measured == [0, 5, 20, 30]  # every 20, the last step and representation_at; NaN at the other steps
    assert list(ds["step"].values) == [0, 5, 10, 20, 30]
    for name in REPRESENTATION_PER_LAYER:
        for step, ref in ((0, reference_init), (30, reference_final)):
            np.testing.assert_allclose(ds[f"{name}_dynamic"].sel(step=step).values, ref[name].values[0],
                                       rtol=1e-6, atol=1e-7, err_msg=f"{name} step {step}")
    # the input X is the same at every step: its k-redundancy against sklearn's neighbours on the probe rows
    rows = balanced_subset(digits.train.y.numpy(), 300, cell.run.seed)
    x, y = digits.train.x[rows].flatten(1).double().numpy(), digits.train.y[rows].numpy()
    neighbours = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    expected = np.mean((y[neighbours] == y[:, None]).all(1))
    np.testing.assert_allclose(ds["k_redundancy_dynamic"].sel(rep_layer=0).dropna("step"), expected, rtol=1e-6)
    assert float(ds["representation_dynamic_seconds"]) > 0


def test_training_is_the_same_with_the_probe_on_or_off(digits):
    cell = make_cell(**CELL, bn_variant="bn_gamma_beta", init="he_normal", representation_every=7,
                     representation_at=[3])
    with_probe, model_on = train(cell, digits)
    without, model_off = train(changed(cell, representation_every=0, representation_at=[]), digits)
    assert "lsd_train_dynamic" not in without
    steps = without["step"].values
    for name in ("loss", "ce", "batch_acc", "test_acc_curve", "batch_entropy", "gamma", "beta"):
        a = with_probe[name].sel(step=steps) if "step" in with_probe[name].dims else with_probe[name]
        np.testing.assert_array_equal(a.values, without[name].values, err_msg=name)
    assert float(with_probe["train_loss"]) == float(without["train_loss"])
    on, off = model_on.state_dict(), model_off.state_dict()  # weights and BatchNorm running statistics
    assert all(torch.equal(on[k], off[k]) for k in off)
    assert model_on.training  # train mode restored after each measurement


def test_a_measurement_draws_no_random_numbers_and_restores_the_modes(digits):
    cell = make_cell(**CELL, bn_variant="bn", representation_at=[0])
    model = build_model(cell, digits.input_shape, digits.n_classes)
    model.train()
    model.layers[0].eval()  # a frozen part (as in the staged regimes) stays in eval mode
    probe = RepresentationDynamicProbe(cell, model, digits)
    rng = torch.get_rng_state()
    x, y = digits.train.x[:8], digits.train.y[:8]
    state = StepState(0, 0, None, model, x, y, None, [], torch.tensor(0.0), True, True)  # type: ignore[arg-type]
    probe.after_forward(state)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and not model.layers[0].training and model.layers[1].training
    assert np.isfinite(probe.records["lsd_train"][0]).all()
    probe.after_forward(state)  # a step is measured once
    assert len(probe.records["lsd_train"]) == 1


def test_config_errors():
    with pytest.raises(ConfigError, match=r"representation_at: steps \[40\] are after the last step \(30\)"):
        check_cell(make_cell(**CELL, representation_at=[10, 40]))
    with pytest.raises(ConfigError, match=r"representation_k .* must be smaller than representation_samples"):
        check_cell(make_cell(**{**CELL, "representation_k": 300}, representation_every=10))
    with pytest.raises(ConfigError, match=r"'representation_dynamic' \(switched on by representation_every, "
                                          r"representation_at\) does not run with training 'layerwise'"):
        check_cell(make_cell(**CELL, representation_every=10, training="layerwise"))
    check_cell(make_cell(**CELL, representation_every=10, representation_at=[0, 30]))


STUDY = {
    "study": "tiny_dynamic",
    "grid": {"k_filter": [0, 5]},
    "fixed": {"dataset": "digits", "depth": 2, "width": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
              "batch_size": 64, "steps": 40, "log_every": 10, "eval_every": 20, "representation_every": 20,
              "representation_at": [5], "representation_samples": 300, "representation_k": 5, "k_filter_batch": 0},
    "plots": [{"name": "kred_steps", "kind": "layer_trajectories", "var": "k_redundancy_dynamic", "col": "k_filter"},
              {"name": "kred_layers", "kind": "representation_layers", "var": "k_redundancy_dynamic", "hue": "step",
               "col": "k_filter"}],
    "claims": [{"name": "kred_grows", "source": "test", "paper": "grows", "metric": "k_redundancy_dynamic",
                "select": {"k_filter": 0, "rep_layer": 2}, "reduce": {"step": "change"}, "op": ">", "value": 0.0},
               {"name": "filter_keeps_less", "source": "test", "paper": "kept", "metric": "train_kept",
                "select": {"k_filter": 5}, "op": "<", "value": 0.5}],
}


@pytest.mark.e2e
def test_dynamic_probe_and_k_filter_end_to_end(tmp_path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_dynamic"
    ds = read_store(out / "metrics.zarr")
    assert ds["k_redundancy_dynamic"].dims == ("k_filter", "step", "rep_layer") and ds.sizes["rep_layer"] == 4
    assert ds["lsd_train_dynamic"].sel(k_filter=0).dropna("step", how="all")["step"].values.tolist() == [0, 5, 20, 40]
    assert float(ds["train_kept"].sel(k_filter=0)) == 1.0 and 0 < float(ds["train_kept"].sel(k_filter=5)) < 0.5
    for name in ("kred_steps", "kred_layers"):
        assert (out / f"figures/{name}.png").stat().st_size > 10_000
    claims = (out / "claims.csv").read_text()
    assert "kred_grows" in claims and "filter_keeps_less" in claims
    bad = {**STUDY, "fixed": {**STUDY["fixed"], "representation_at": [50]}}
    write_study(tmp_path / "bad", bad)
    proc = snakemake(tmp_path / "bad", check=False)
    assert proc.returncode != 0 and "representation_at: steps [50] are after the last step (40)" in proc.stderr
