"""Reconstruction-entropy cascade (paper 003) against float64 references, the cutoff rule, and the phases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import make_cell

from layerlab.measurements.cascade import (
    cutoff_depth,
    differential_entropy,
    make_cascade,
    reconstruct,
    relative_entropy,
    run_cascade,
)
from layerlab.nets.models import build_model
from layerlab.report.analysis import (
    add_cascade_prediction,
    add_trainability,
    cascade_epoch_cost,
    cascade_summary,
    study_summary,
)


def test_relative_entropy_matches_numpy_reference():
    rng = np.random.default_rng(0)
    original, recon = rng.uniform(0, 1, (5, 16)), rng.uniform(-1, 1, (5, 16))

    def pmf(x):
        x = x - x.min(axis=1, keepdims=True) + 1e-12
        return x / x.sum(axis=1, keepdims=True)

    p, q = pmf(original), pmf(recon)
    expected = np.sum(p * np.log(p / q), axis=1)
    got = relative_entropy(torch.tensor(original, dtype=torch.float32), torch.tensor(recon, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert relative_entropy(torch.tensor(original), torch.tensor(original)).abs().max() < 1e-12
    assert (got > 0).all()  # Gibbs' inequality


def test_differential_entropy_matches_gaussian_formula():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.5, (200, 10))
    normed = x / x.sum(axis=1, keepdims=True)
    expected = np.mean(0.5 * np.log(2 * np.pi * np.e * normed.var(axis=0, ddof=1)))
    assert differential_entropy(torch.tensor(x)) == pytest.approx(expected, rel=1e-10)
    # identical reconstructions: sigma = 0 floors at log(1e-30) instead of -inf
    floor = differential_entropy(torch.ones(4, 10))
    assert floor == pytest.approx(0.5 * math.log(2 * math.pi * math.e) + math.log(1e-30))


@pytest.mark.parametrize(("curve", "expected"), [
    ([0.2, 0.5, 0.9, 0.999, 1.0, 1.0], 4),      # layer 3 is the last one off by > 0.5 %: saturated from 4 on
    ([0.2, 0.4, 0.6, 0.8, 1.0], 5),             # still changing at the last layer: l* = L
    ([1.0, 1.001, 0.999, 1.0], 1),              # flat from the start
    ([2.0, 1.0, 1.004, 1.0], 2),                # falling curves saturate too
])
def test_cutoff_rule(curve, expected):
    assert cutoff_depth(np.array(curve), 0.005) == expected


def test_cascade_maps_each_layer_back_to_the_input():
    cascade = make_cascade([64, 32, 16, 8])
    hidden = [torch.randn(5, n) for n in (32, 16, 8)]
    recon = reconstruct(cascade, hidden)
    assert recon.shape == (3, 5, 64) and recon.abs().max() <= 1  # tanh outputs
    torch.testing.assert_close(recon[0], cascade[0](hidden[0]))
    torch.testing.assert_close(recon[2], cascade[0](cascade[1](cascade[2](hidden[2]))))



def ordered_and_critical(data, depth: int, images: int) -> dict[float, xr.Dataset]:
    """The cascade of an untrained tanh net of width 64 at sigma_w2 = 0.5 (ordered) and 1.76 (critical)."""
    torch.set_num_threads(1)
    out = {}
    for sw2 in (0.5, 1.76):
        cell = make_cell(depth=depth, width=64, activation="tanh", init="gaussian", sigma_w2=sw2, sigma_b2=0.05,
                         input_scaling="unit", cascade_epochs=7, cascade_images=images)
        model = build_model(cell, data.input_shape, data.n_classes)
        out[sw2] = run_cascade(cell, data, {"init": model}, torch.device("cpu"))
    return out


def test_ordered_network_loses_information_critical_keeps_it(digits_unit):
    """Seed notes' smoke test: S_L(0.5) < S_L(1.76) - 3 and l*(1.76) > l*(0.5)."""
    out = ordered_and_critical(digits_unit, depth=20, images=2)
    ordered, critical = out[0.5], out[1.76]
    assert float(ordered["re_diff_entropy"][-1]) < float(critical["re_diff_entropy"][-1]) - 3
    assert int(critical["cutoff_depth"]) > int(ordered["cutoff_depth"])
    assert ordered["reconstruction"].shape == (20, 2, 8, 8) and ordered["original"].shape == (2, 8, 8)
    assert float(ordered["re_kl"][-1]) == pytest.approx(1.0)  # curves are normalised by their last layer


def test_prediction_agreement_and_cost():
    cells = []
    for depth, acc, cutoff in [(10, 0.9, 30), (20, 0.2, 30), (40, 0.1, 30)]:
        ds = xr.Dataset({"cutoff_depth": cutoff, "cutoff_depth_diff_entropy": 15, "cascade_seconds": 2.0,
                         "train_seconds": 8.0, "train_acc": acc, "train_rows": 1000, "diverged_step": -1})
        cell = make_cell(depth=depth, steps=100, batch_size=50, cascade_epochs=2)
        cells.append(add_cascade_prediction(ds, cell, is_source=depth == 40).expand_dims(depth=[depth]))
    study = xr.concat(cells, "depth")
    study["config"] = ("depth", np.array(["a", "b", "c"], dtype=object))
    study["diverged"] = ("depth", [0, 0, 0])
    study = add_trainability(study, "train_acc", 0.3)
    assert list(study["predicted_trainable"].values) == [True, True, False]
    assert list(study["trainable"].values) == [1, 0, 0]
    assert study_summary(study) == {"cells": 3, "diverged": 0, "trainable": 1}
    assert list(study["predicted_trainable_diff_entropy"].values) == [True, False, False]
    assert cascade_summary(study) == {"agreement": pytest.approx(2 / 3), "agreement_diff_entropy": 1.0,
                                      "predictors_agreement": pytest.approx(2 / 3), "median_cost_ratio": 0.25}
    assert list(study["prediction_agrees"].values) == [1, 0, 1]
    assert list(study["prediction_agrees_diff_entropy"].values) == [1, 1, 1]
    assert list(study["predictors_agree"].values) == [1, 0, 1]
    # one cascade epoch: 2.0 s / 2 = 1 s; one training epoch: 8.0 s / 100 steps x 1000 / 50 steps = 1.6 s
    assert np.isnan(study["cascade_epoch_cost"].sel(depth=[10, 20])).all()  # defined on the deepest cell only
    assert float(study["cascade_epoch_cost"].sel(depth=40)) == pytest.approx(1.0 / 1.6)


def test_cascade_epoch_cost_of_a_diverged_network_uses_the_steps_it_ran():
    ds = xr.Dataset({"cascade_seconds": 3.0, "train_seconds": 8.0, "train_rows": 1437, "diverged_step": 40})
    # 8.0 s / 40 steps = 0.2 s per step; 1437 rows at batch 64: 22.45 steps, 4.49 s; one cascade epoch 1 s
    cost = cascade_epoch_cost(ds, make_cell(steps=1500, batch_size=64, cascade_epochs=3))
    assert cost == pytest.approx(1.0 / (0.2 * 1437 / 64))


def paper_cutoff(curve: list[float], eta: float) -> int:
    """App. A.2 read literally: l* = L; walk down from layer L until |RE(L) - RE(l_i)| > eta |RE(L)|: l* = l_i + 1."""
    last = len(curve)
    for layer in range(last - 1, 0, -1):  # 1-based l_i
        if abs(curve[-1] - curve[layer - 1]) > eta * abs(curve[-1]):
            return layer + 1
    return 1


def test_diff_entropy_cutoff_follows_the_paper_rule(digits_unit):
    """l*_S of an ordered and a critical 40-layer net equals App. A.2's rule applied to S; the ordered net's S
    reaches its floor (information lost, S ~ -19) inside the network, the critical net's is still falling at 40."""
    cut = {}
    for sw2, ds in ordered_and_critical(digits_unit, depth=40, images=0).items():
        cut[sw2] = int(ds["cutoff_depth_diff_entropy"])
        assert cut[sw2] == paper_cutoff(list(ds["re_diff_entropy"].values), 0.005)
        if sw2 == 0.5:
            assert float(ds["re_diff_entropy"][-1]) < -17
    assert 1 < cut[0.5] < 40 and cut[1.76] == 40
