"""Representation probe (paper 001 ch. 5): LSD, k-redundancy and selection entropy against independent references
(numpy lstsq / pinv, sklearn nearest neighbours, scipy entropy, closed forms and hand-made cases), determinism,
config errors and one end-to-end Snakemake run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import changed, make_cell, snakemake, write_study
from scipy.stats import entropy
from sklearn.neighbors import NearestNeighbors
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.core.store import read_store
from layerlab.measurements.representation import (
    balanced_subset,
    k_redundancy,
    linear_probe,
    lsd,
    run_representation,
    selection_entropy,
)
from layerlab.nets.models import build_model


def lsd_reference(z: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """1/m ||Y - A A^+ Y||_F^2, A = [Z, 1], by numpy's pseudoinverse."""
    a = np.hstack([z, np.ones((len(z), 1))])
    y = np.eye(n_classes)[labels]
    return float(((y - a @ np.linalg.pinv(a) @ y) ** 2).sum() / len(z))


def lsd_of(z: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[float, torch.Tensor]:
    zt, yt = torch.from_numpy(z), torch.from_numpy(labels)
    b = linear_probe(zt, F.one_hot(yt, n_classes))
    return lsd(zt, yt, b, n_classes)[0], b


@pytest.mark.parametrize(("m", "n"), [(200, 5), (60, 40), (30, 50)])  # full rank, near square, rank deficient
def test_lsd_matches_numpy_lstsq_and_pinv(m, n):
    rng = np.random.default_rng(m + n)
    z = rng.standard_normal((m, n)) * rng.uniform(0.1, 10, n)
    z[:, -1] = z[:, 0]  # a repeated column: rank deficient for every shape
    labels = rng.integers(0, 4, m)
    value, b = lsd_of(z, labels, 4)
    a = np.hstack([z, np.ones((m, 1))])
    ref_b = np.linalg.lstsq(a, np.eye(4)[labels], rcond=None)[0]  # minimum-norm solution (LAPACK gelsd)
    np.testing.assert_allclose(b.numpy(), ref_b, rtol=1e-8, atol=1e-10)
    assert value == pytest.approx(lsd_reference(z, labels, 4), rel=1e-9, abs=1e-12)
    if m <= n:  # as many columns as rows: the fit interpolates
        assert value == pytest.approx(0, abs=1e-18)


def test_lsd_closed_forms():
    labels = np.repeat(np.arange(5), [10, 20, 30, 20, 20])
    onehot = np.eye(5)[labels]
    rotated = onehot @ np.random.default_rng(0).standard_normal((5, 5)) + 3.0  # invertible map of Y, shifted
    value, b = lsd_of(rotated, labels, 5)
    assert value == pytest.approx(0, abs=1e-20)  # linearly separable one-hot targets: zero residual
    acc = lsd(torch.from_numpy(rotated), torch.from_numpy(labels), b, 5)[1]
    assert acc == 1.0
    # a constant representation: only the bias fits, the prediction is the class frequencies p, LSD = 1 - sum p^2
    p = np.bincount(labels) / len(labels)
    assert lsd_of(np.zeros((len(labels), 3)), labels, 5)[0] == pytest.approx(1 - (p**2).sum(), rel=1e-12)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_k_redundancy_matches_sklearn(k):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, 3, 300)
    z = rng.standard_normal((300, 6)) + labels[:, None] * 1.5  # overlapping classes: a non-trivial fraction
    neighbours = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    expected = float(np.mean((labels[neighbours] == labels[:, None]).all(1)))
    assert 0.05 < expected < 0.95
    got = k_redundancy(torch.from_numpy(z).float(), torch.from_numpy(labels), k, chunk=37)  # several chunks
    assert got == pytest.approx(expected, abs=1e-12)


def test_k_redundancy_hand_made():
    z = torch.tensor([0.0, 1.1, 2.3, 3.0, 10.0, 11.2, 12.5])[:, None]  # no distance ties
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    # k = 1, 2: 2.3 and 3.0 (neighbours across the label change) are not redundant, the other 5 are
    assert k_redundancy(z, labels, 1) == pytest.approx(5 / 7)
    assert k_redundancy(z, labels, 2) == pytest.approx(5 / 7)
    # k = 3: the left cluster sees the other label; 10, 11.2, 12.5 see each other and 3.0 (also label 1)
    assert k_redundancy(z, labels, 3) == pytest.approx(3 / 7)
    assert k_redundancy(z, labels, 4) == 0.0
    with pytest.raises(ValueError, match="0 < k < samples"):
        k_redundancy(z, labels, 7)


def test_selection_entropy_hand_made_and_scipy():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    z = torch.zeros(8, 3)
    z[labels == 0, 0] = 1.0  # feature 0 selects class 0 only: 0 bits
    z[:, 1] = torch.arange(1.0, 9.0)  # feature 1 selects everything, 4 balanced classes: 2 bits
    z[:, 2] = 0.0  # feature 2 is dead: skipped
    h, skipped = selection_entropy(z, labels, 4)
    assert h == pytest.approx(1.0) and skipped == pytest.approx(1 / 3)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 500)
    z = np.maximum(rng.standard_normal((500, 20)) + 0.3 * labels[:, None] * rng.standard_normal(20), 0)
    ref = np.mean([entropy(np.bincount(labels[z[:, j] > 0], minlength=10), base=2) for j in range(20)])
    h, skipped = selection_entropy(torch.from_numpy(z), torch.from_numpy(labels), 10)
    assert h == pytest.approx(ref, rel=1e-12) and skipped == 0.0
    assert np.isnan(selection_entropy(torch.zeros(5, 2), torch.arange(5), 5)[0])


def test_balanced_subset():
    labels = np.repeat(np.arange(4), [50, 50, 50, 5])  # class 3 is smaller than its quota
    idx = balanced_subset(labels, 80, seed=0)
    assert len(idx) == 80 == len(set(idx)) and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx])
    assert counts[3] == 5 and counts[:3].min() >= 20  # all of the small class, the rest topped up
    assert np.array_equal(idx, balanced_subset(labels, 80, seed=0))
    assert not np.array_equal(idx, balanced_subset(labels, 80, seed=1))
    assert len(balanced_subset(labels, 1000, seed=0)) == len(labels)  # capped at the split size
    assert np.all(np.bincount(labels[balanced_subset(labels, 20, seed=3)]) == 5)



def test_probe_on_networks_is_deterministic_and_consistent(digits):
    cell = make_cell(depth=3, widths=[32, 16, 8], representation_samples=500, representation_k=5)
    ds = run_representation(cell, digits, {"init": build_model(cell, digits.input_shape, digits.n_classes)},
                            torch.device("cpu"))
    again = run_representation(cell, digits, {"init": build_model(cell, digits.input_shape, digits.n_classes)},
                               torch.device("cpu"))
    for name in ("lsd_train", "lsd_heldout", "k_redundancy", "selection_entropy"):
        np.testing.assert_array_equal(ds[name].values, again[name].values)
    assert list(ds["rep_features"].values) == [64, 32, 16, 8, 10]
    assert int(ds["rep_samples"]) == 500 and int(ds["rep_heldout_samples"]) == 360  # test split of digits: 360
    # rep_layer 0 is the network-independent input: compare with the references on the same rows
    rows = balanced_subset(digits.train.y.numpy(), 500, cell.run.seed)
    x, y = digits.train.x[rows].flatten(1).double().numpy(), digits.train.y[rows].numpy()
    assert float(ds["lsd_train"].sel(checkpoint="init", rep_layer=0)) == pytest.approx(lsd_reference(x, y, 10),
                                                                                         rel=1e-8)
    neighbours = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    assert float(ds["k_redundancy"].sel(checkpoint="init", rep_layer=0)) == pytest.approx(
        np.mean((y[neighbours] == y[:, None]).all(1)))
    sel = ds["selection_entropy"].sel(checkpoint="init")
    assert np.isnan(sel[[0, 4]]).all() and (sel[1:4] > 0).all() and (sel[1:4] <= np.log2(10) + 1e-12).all()


def test_conv_maps_are_pooled_and_a_diverged_network_gives_nan(digits):
    cell = make_cell(model="cnn", depth=3, width=4, representation_samples=200, representation_k=3)
    net = build_model(cell, digits.input_shape, digits.n_classes)
    broken = build_model(cell, digits.input_shape, digits.n_classes)
    with torch.no_grad():
        broken.head.weight.fill_(float("nan"))
    ds = run_representation(cell, digits, {"init": net, "final": broken}, torch.device("cpu"))
    # X flattened (64 pixels), two conv layers pooled to 4 channels, the FC layer (4*8*8 // 4 units), logits
    assert list(ds["rep_features"].values) == [64, 4, 4, 64, 10]
    sel = ds["selection_entropy"].sel(checkpoint="init").values
    assert np.isnan(sel[[0, 1, 2, 4]]).all() and np.isfinite(sel[3])  # fully connected ReLU layers only
    final = ds.sel(checkpoint="final")
    assert np.isnan(final["lsd_train"][4]) and np.isnan(final["k_redundancy"][4])  # NaN logits: a result
    assert float(final["lsd_train"][1]) == float(ds["lsd_train"].sel(checkpoint="init")[1])  # same hidden layers
    flat = run_representation(changed(cell, representation_conv="flatten"), digits, {"init": net}, torch.device("cpu"))
    assert list(flat["rep_features"].values) == [64, 4 * 64, 4 * 64, 64, 10]


def test_config_errors():
    with pytest.raises(ConfigError, match=r"representation_k \(10\) must be smaller than representation_samples"):
        check_cell(make_cell(representation_samples=10, representation_k=10), ["representation"])
    check_cell(make_cell(representation_samples=10, representation_k=10), [])  # no probe, no constraint
    with pytest.raises(ConfigError, match="needs model 'fnn' and depth = its length 3"):
        check_cell(make_cell(depth=2, widths=[8, 4, 2]))


STUDY = {
    "study": "tiny_representation",
    "grid": {"depth": [1, 2]},
    "fixed": {"dataset": "digits", "width": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64,
              "steps": 60, "log_every": 20, "eval_every": 30, "representation_samples": 400, "representation_k": 5},
    "measurements": ["representation"],
    "plots": [{"name": "kred", "kind": "representation_layers", "var": "k_redundancy", "col": "depth"}],
}


@pytest.mark.e2e
def test_representation_probe_end_to_end(tmp_path: Path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_representation"
    ds = read_store(out / "metrics.zarr")
    assert ds["k_redundancy"].dims == ("depth", "checkpoint", "rep_layer")
    assert list(ds["checkpoint"].values) == ["init", "final"] and ds.sizes["rep_layer"] == 4
    assert np.isnan(ds["lsd_train"].sel(depth=1, rep_layer=3)).all()  # depth 1 has 3 representations
    assert np.isfinite(ds["lsd_train"].sel(depth=2)).all()
    # training makes the last hidden layer more class-pure than at init
    last = ds["k_redundancy"].sel(depth=2, rep_layer=2)
    assert float(last.sel(checkpoint="final")) > float(last.sel(checkpoint="init"))
    cell = read_store(out / "cells/depth~2/representation.zarr")
    np.testing.assert_array_equal(cell["lsd_heldout"].values, ds["lsd_heldout"].sel(depth=2).values)
    assert (out / "figures/kred.png").stat().st_size > 10_000
    assert "representation_seconds" in (out / "summary.csv").read_text().splitlines()[0]


@pytest.mark.e2e
def test_bad_k_stops_before_any_job(tmp_path: Path):
    write_study(tmp_path, {**STUDY, "fixed": {**STUDY["fixed"], "representation_k": 400}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "representation_k (400) must be smaller" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_fnn_with_per_layer_widths():
    net = build_model(make_cell(depth=3, widths=[7, 5, 3]), (1, 8, 8), 10)
    assert [(m.in_features, m.out_features) for m in net.layers] == [(64, 7), (7, 5), (5, 3)]
    assert (net.head.in_features, net.head.out_features) == (3, 10)
    logits, hidden = net(torch.zeros(2, 1, 8, 8))
    assert logits.shape == (2, 10) and [h.shape[1] for h in hidden] == [7, 5, 3]
