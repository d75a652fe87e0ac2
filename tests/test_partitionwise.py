"""Partition-wise training (DPL, paper 001 Sec. 6.8) and loss filtering (Sec. 6.8.4): windows, a hand-written
reference loop, the filter against a numpy selection, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import make_cell
from torch.nn import functional as F

import layerlab.training.regimes.stage_nets as sn
from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.nets.models import build_model
from layerlab.training.batch_filters import KFilter, LossFilter, chain
from layerlab.training.loop import train_cell
from layerlab.training.optim import Batches


def cell(**overrides) -> dict:
    return make_cell(**{"training": "partitionwise", "depth": 4, "width": 16, "segment_size": 2, "optimizer": "sgd",
                        "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "layer_lr_decay": 0.5,
                        "layer_wd_growth": 0.5, "layer_steps": 6, "log_every": 3, "eval_every": 6, **overrides})


def run(c: dict, data) -> tuple[xr.Dataset, torch.nn.Module]:
    torch.set_num_threads(1)
    return train_cell(c, data, build_model(c, data.input_shape, data.n_classes), torch.device("cpu"))


def test_partitions_do_not_overlap_and_cover_every_layer():
    assert sn.partitions(4, 2) == [(0, 2), (2, 4)]
    assert sn.partitions(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert sn.partitions(3, 3) == [(0, 3)] and sn.partitions(3, 1) == sn.windows(3, 1)
    with pytest.raises(ValueError, match="segment_size 4"):
        sn.partitions(3, 4)


def test_matches_a_hand_written_bottom_up_loop(digits):
    """Partition 0 trains layers 0-1 with a fresh head; partition 1 trains layers 2-3 with the output layer at
    lr x 0.5 and wd x 0.5, layers 0-1 frozen: the same weights as a plain torch loop over the same batches."""
    c = cell()
    ds, model = run(c, digits)
    ref = build_model(c, digits.input_shape, digits.n_classes)
    x_all, y_all = digits.train.x, digits.train.y
    batches = Batches(len(y_all), c.run.batch_size, torch.Generator().manual_seed(c.run.seed))

    def hidden(x: torch.Tensor, layers: range) -> torch.Tensor:
        h = x.flatten(1)
        for i in layers:
            h = ref.acts[i](ref.layers[i](h))
        return h

    head0 = sn.make_head(c, (16,), digits.n_classes, 0)
    for i, (layers, head) in enumerate([(range(0, 2), head0), (range(2, 4), ref.head)]):
        params = [p for j in layers for p in ref.layers[j].parameters()] + list(head.parameters())
        opt = torch.optim.SGD(params, lr=0.05 * 0.5**i, momentum=0.9, weight_decay=1e-3 * 0.5**i)
        for _ in range(6):
            idx = next(batches)
            with torch.no_grad():
                h = hidden(x_all[idx], range(0, layers.start))
            for j in layers:
                h = ref.acts[j](ref.layers[j](h))
            opt.zero_grad()
            F.cross_entropy(head(h), y_all[idx]).backward()
            opt.step()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert list(ds["stage"].values) == [0, 0, 1, 1, 1] and list(ds["step"].values) == [0, 3, 6, 9, 12]
    np.testing.assert_allclose(ds["layer_lr"], [np.nan, 0.05, np.nan, 0.025])  # reported at each partition's top
    assert np.isfinite(ds["layer_peak_memory_bytes"].values[[1, 3]]).all()  # the memory of each partition


def test_one_layer_partitions_are_layerwise_training(digits):
    a, _ = run(cell(segment_size=1, layer_lr_decay=0.8, layer_wd_growth=1.15), digits)
    b, _ = run(cell(training="layerwise", segment_size=1, layer_lr_decay=0.8, layer_wd_growth=1.15), digits)
    xr.testing.assert_identical(a.drop_vars("train_seconds"), b.drop_vars("train_seconds"))


def test_loss_filter_drops_the_lowest_loss_examples_of_each_batch():
    torch.manual_seed(0)
    c = cell()
    model = build_model(c, (8,), 3)
    net = sn.StageNet(model, 0, 2, sn.make_head(c, (16,), 3, 0)).eval()
    x, y, idx = torch.randn(10, 8), torch.randint(0, 3, (10,)), torch.arange(100, 110)
    losses = F.cross_entropy(net(x)[0], y, reduction="none").detach().numpy()
    keep = np.sort(np.argsort(-losses, kind="stable")[:8])  # 0.25 x 10 = 2 dropped (rounded down)
    flt = LossFilter(net, 0.25, start=3)
    np.testing.assert_array_equal(flt(idx, x, y, 3).numpy(), keep)
    assert losses[keep].min() >= np.delete(losses, keep).max()
    np.testing.assert_array_equal(flt(idx, x, y, 2).numpy(), np.arange(10))  # before `start`: the whole batch


def brute_force_redundant(z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Def. 8 by hand: all k nearest other rows (Euclidean) share the row's label."""
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.array([(y[np.argsort(d[i], kind="stable")[:k]] == y[i]).all() for i in range(len(y))])


@pytest.mark.parametrize("cap", [1.0, 0.1])
def test_online_k_filter_keeps_the_rows_whose_feednet_features_are_not_redundant(digits, cap):
    """An upper partition's filter works on the frozen feednet's outputs of every training row; the cap re-admits
    the redundant rows after the first cap x n (stored order); each batch keeps its kept rows."""
    c = cell(k_filter=3, k_filter_batch=0, k_filter_cap=cap)
    model = build_model(c, digits.input_shape, digits.n_classes)
    split = type(digits.train)(digits.train.x[:300], digits.train.y[:300])
    net = sn.stage_network(c, model, 1, (2, 4), True, digits.n_classes, split.x)
    flt = KFilter(c.run, c.regime.k_filter_cap, net, split, start=2)
    with torch.no_grad():
        h = split.x.flatten(1)
        for layer, act in zip(model.layers[:2], model.acts[:2], strict=True):
            h = act(layer(h))
    redundant = brute_force_redundant(h.double().numpy(), split.y.numpy(), 3)
    removed = np.flatnonzero(redundant)[:int(cap * 300)]
    expected = np.ones(300, bool)
    expected[removed] = False
    assert 0 < len(removed) < 300
    idx = torch.arange(0, 300, 7)
    np.testing.assert_array_equal(flt(idx, split.x[idx], split.y[idx], 1).numpy(), np.arange(len(idx)))  # not yet
    np.testing.assert_array_equal(flt(idx, split.x[idx], split.y[idx], 2).numpy(), np.flatnonzero(expected[idx]))
    np.testing.assert_array_equal(flt.keep.numpy(), expected)


def test_chained_selections_compose_positions():
    def drop_first(idx, x, y, t):
        return torch.arange(1, len(y))

    def even_rows(idx, x, y, t):
        return torch.nonzero(idx % 2 == 0).flatten()

    idx = torch.tensor([10, 11, 12, 13, 14])
    both = chain(drop_first, None, even_rows)
    np.testing.assert_array_equal(both(idx, idx, idx, 0).numpy(), [2, 4])  # rows 12 and 14 of the batch
    assert chain(None, even_rows) is even_rows and chain(None) is None


def test_loss_filter_changes_only_the_upper_partitions(digits):
    plain, _ = run(cell(), digits)
    filtered, _ = run(cell(loss_filter=0.5), digits)
    stage0 = plain["stage"].values == 0
    np.testing.assert_array_equal(plain["loss"].values[stage0], filtered["loss"].values[stage0])
    assert not np.array_equal(plain["loss"].values[~stage0], filtered["loss"].values[~stage0])
    late, _ = run(cell(loss_filter=0.5, filter_from=7), digits)  # never on within the 6-update stages
    np.testing.assert_array_equal(plain["loss"].values, late["loss"].values)


def test_online_k_filter_runs_in_the_upper_partitions_only(digits):
    plain, _ = run(cell(), digits)
    filtered, _ = run(cell(k_filter=5, k_filter_batch=500, filter_from=2), digits)
    stage0 = plain["stage"].values == 0
    np.testing.assert_array_equal(plain["loss"].values[stage0], filtered["loss"].values[stage0])
    assert not np.array_equal(plain["loss"].values[~stage0], filtered["loss"].values[~stage0])
    kept = filtered["layer_k_kept"].values
    assert np.isnan(kept[[0, 1, 2]]).all() and 0.4 <= kept[3] < 1  # reported at the top of partition 1
    assert int(filtered["train_rows"]) == len(digits.train.y)  # not the backprop pre-filter


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(training="layerwise", segment_size=1, loss_filter=0.25), "loss_filter 0.25 .* training 'layerwise'"),
    (dict(segment_size=4, loss_filter=0.25), "segment_size 4"),
    (dict(segment_size=4, k_filter=5), "k_filter 5 filters the batches of the upper partitions"),
    (dict(training="segmentwise", k_filter=5), "k_filter is an option of training 'backprop'"),
    (dict(segment_size=5), "segment_size 5 exceeds the 4 hidden layers"),
    (dict(training="layerwise", segment_size=2), "'segmentwise' or 'partitionwise'"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_cell(cell(**overrides))
