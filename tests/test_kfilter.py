"""k-filtering (paper 001 ch. 5, Def. 8) against a brute-force numpy reference (exact and in batches), the training
loop drawing its batches from the kept rows only, the recorded kept fraction, and config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import changed, make_cell

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.nets.models import build_model
from layerlab.training.kfilter import kept_rows
from layerlab.training.loop import Loop, train_cell


def brute_force_kept(x: np.ndarray, y: np.ndarray, k: int, batch: int = 0) -> np.ndarray:
    """Pairwise loops in float64: a row is kept unless its k nearest other rows of its batch all share its label."""
    kept = []
    size = batch or len(y)
    for start in range(0, len(y), size):
        idx = np.arange(start, min(start + size, len(y)))
        for i in idx:
            others = idx[idx != i]
            if len(others) < k:
                kept.append(i)
                continue
            dist = np.array([np.sqrt(((x[i] - x[j]) ** 2).sum()) for j in others])
            nearest = others[np.argsort(dist, kind="stable")[:k]]
            if not (y[nearest] == y[i]).all():
                kept.append(i)
    return np.array(kept)


@pytest.mark.parametrize(("k", "batch"), [(1, 0), (3, 0), (5, 0), (3, 37), (5, 64)])
def test_kept_rows_match_a_brute_force_reference(k, batch):
    rng = np.random.default_rng(k + batch)
    y = rng.integers(0, 3, 150)
    x = rng.standard_normal((150, 1, 2, 3)) + y[:, None, None, None] * 1.2  # overlapping classes, no ties
    expected = brute_force_kept(x.reshape(150, -1), y, k, batch)
    assert 0.1 < len(expected) / 150 < 0.95
    got = kept_rows(torch.from_numpy(x).float(), torch.from_numpy(y), k, batch)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_kept_rows_of_jittered_digits_exact_and_in_batches(digits):
    x = digits.train.x.double() + 1e-3 * torch.randn(digits.train.x.shape, generator=torch.Generator().manual_seed(0),
                                                     dtype=torch.float64)  # jitter breaks distance ties
    y = digits.train.y
    for batch in (0, 500):  # 1437 rows: exact, and batches of 500, 500, 437
        expected = brute_force_kept(x.flatten(1).numpy(), y.numpy(), 5, batch)
        np.testing.assert_array_equal(kept_rows(x, y, 5, batch).numpy(), expected)
    # fewer neighbours within a batch: the neighbourhoods are less pure, more rows are kept
    assert len(kept_rows(x, y, 5, 200)) > len(kept_rows(x, y, 5, 0))


def test_hand_made_and_a_short_last_batch():
    x = torch.tensor([0.0, 1.1, 2.3, 3.0, 10.0, 11.2, 12.5])[:, None]
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    assert kept_rows(x, y, 1).tolist() == [2, 3]  # the rows next to the label change
    assert kept_rows(x, y, 4).tolist() == list(range(7))
    # batches 0-2 and 3-5 are pure (every row redundant); the last batch, row 6 alone, has no neighbour: kept
    assert kept_rows(x, y, 1, batch=3).tolist() == [6]
    assert kept_rows(x, y, 1, batch=4).tolist() == [2, 3]


def test_training_draws_batches_from_the_kept_rows(digits):
    cell = make_cell(depth=2, width=16, steps=12, log_every=4, eval_every=6, batch_size=50, k_filter=5,
                     k_filter_batch=0)
    torch.set_num_threads(1)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    loop = Loop(cell, digits, model)
    rows = kept_rows(digits.train.x, digits.train.y, 5)
    assert torch.equal(loop.rows, rows) and loop.stream.n == len(rows) < len(digits.train.y)
    stage = loop.regime.stage(0)
    allowed = {tuple(r.tolist()) for r in digits.train.x[rows].flatten(1)}
    for t in range(len(rows) // 50 + 2):  # more than one epoch of the kept rows
        state = loop.forward(stage, t)
        assert all(tuple(r.tolist()) in allowed for r in state.x.flatten(1))
    ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"))
    assert int(ds["train_rows"]) == len(rows) and float(ds["train_kept"]) == pytest.approx(len(rows) / 1437)
    off, _ = train_cell(changed(cell, k_filter=0), digits, build_model(cell, digits.input_shape, digits.n_classes),
                        torch.device("cpu"))
    assert float(off["train_kept"]) == 1.0 and int(off["train_rows"]) == 1437 and float(off["k_filter_seconds"]) == 0


def test_config_errors():
    with pytest.raises(ConfigError, match=r"k_filter_batch \(10\) must exceed k_filter \(10\)"):
        check_cell(make_cell(k_filter=10, k_filter_batch=10))
    with pytest.raises(ConfigError, match="k_filter is an option of training 'backprop'"):
        check_cell(make_cell(k_filter=10, training="layerwise", depth=2))
    check_cell(make_cell(k_filter=10, k_filter_batch=0))
    check_cell(make_cell(k_filter=0, k_filter_batch=1))
