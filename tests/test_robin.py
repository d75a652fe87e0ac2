"""Round-robin / random-robin training (paper 001, Ch. 6, Algorithm 4) and the stable-rank measurement: references
(a hand-written float64 loop, layer-wise training, closed-form memory, numpy) and config errors."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import TINY_STUDY, changed, make_cell
from torch.nn import functional as F

import layerlab.training.regimes.stage_nets as sn
from layerlab.catalog import check_cell
from layerlab.catalog.probes import MEMORY as MEMORY_VARIABLES
from layerlab.core.config import ConfigError
from layerlab.data.datasets import Dataset, Split
from layerlab.measurements.stable_rank import run_stable_rank, stable_rank, stable_rank_summary
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell
from layerlab.training.memory import optimizer_state_bytes
from layerlab.training.optim import evaluate, make_optimizer
from layerlab.training.regimes.robin import layer_orders
from layerlab.workflow.validate import check_study

F32 = 4
MEMORY = set(MEMORY_VARIABLES) - {"backprop_memory_bytes"}  # robin holds more beside each step; backprop's is the same


def robin(**overrides) -> dict:
    return make_cell(**{"depth": 3, "width": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32,
                        "layer_steps": 4, "rounds": 2, "log_every": 2, "eval_every": 4, "training": "round_robin",
                        **overrides})


def run(cell: dict, data) -> tuple[xr.Dataset, torch.nn.Module]:
    torch.set_num_threads(1)
    return train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), torch.device("cpu"))


# --- the reference: Algorithm 4 written out in plain torch -------------------------------------------------------

@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def hand_robin(cell: dict, model: torch.nn.Module, heads: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
               orders: list[list[int]]) -> dict[str, torch.Tensor]:
    """Algorithm 4 with a persistent SGD per layer, the feednet in its current state (eval mode, no grad); the
    loop's batch stream (a seeded permutation per epoch, partial batch dropped); MultiStepLR by hand."""
    model, heads = copy.deepcopy(model), [*copy.deepcopy(heads), None]
    heads[-1] = model.head
    layers = list(model.layers)
    opt = cell.optimizer
    optimizers = [torch.optim.SGD([*layers[i].parameters(), *heads[i].parameters()], lr=0.0, momentum=opt.momentum,
                                  weight_decay=opt.weight_decay) for i in range(len(layers))]
    updates = [0] * len(layers)
    generator, perm, pos, b = torch.Generator().manual_seed(cell.run.seed), None, 0, cell.run.batch_size

    def loss(i: int) -> torch.Tensor:
        nonlocal perm, pos
        if perm is None or pos + b > len(y):
            perm, pos = torch.randperm(len(y), generator=generator), 0
        idx, pos = perm[pos : pos + b], pos + b
        h = x[idx].flatten(1)
        with torch.no_grad():
            for layer in layers[:i]:
                h = torch.relu(layer.eval()(h))
        return F.cross_entropy(heads[i].train()(torch.relu(layers[i].train()(h))), y[idx])

    for order in orders:
        for i in order:
            for _ in range(cell.regime.layer_steps):
                step_loss = loss(i)
                decay = 0.1 ** sum(updates[i] >= m for m in cell.optimizer.lr_milestones)
                for group in optimizers[i].param_groups:
                    group["lr"] = cell.optimizer.lr * cell.regime.layer_lr_decay ** i * decay
                optimizers[i].zero_grad()
                step_loss.backward()
                optimizers[i].step()
                updates[i] += 1
    loss(orders[-1][-1])  # the loop's logged forward after the last update (train mode: BatchNorm statistics move)
    return model.state_dict()


@pytest.mark.parametrize("training", ["round_robin", "random_robin"])
def test_two_rounds_equal_a_hand_written_float64_loop(digits, float64, training):
    data = Dataset(digits.name, Split(digits.train.x.double(), digits.train.y),
                   Split(digits.test.x.double(), digits.test.y), digits.n_classes)
    cell = robin(training=training, width=8, bn_variant="bn", layer_steps=3, weight_decay=1e-3, layer_lr_decay=0.8,
                 lr_milestones=[4], log_every=3, eval_every=3)
    model = build_model(cell, data.input_shape, data.n_classes)
    heads = [sn.make_head(cell, (8,), data.n_classes, i) for i in range(2)]  # the regime's seeded heads
    orders = layer_orders(3, 2, training == "random_robin", cell.run.seed)
    expected = hand_robin(cell, model, heads, data.train.x, data.train.y, orders)
    ds, trained = train_cell(cell, data, model, torch.device("cpu"))
    assert trained.layers[0][0].weight.dtype == torch.float64
    got = trained.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():  # BatchNorm running statistics included
        torch.testing.assert_close(got[key], value, rtol=1e-10, atol=1e-12, msg=key)
    np.testing.assert_array_equal(ds["robin_order"].values, orders)


def test_one_round_of_round_robin_is_layerwise_training(digits):
    cell = robin(rounds=1, input_dropout=0.3, grad_dropout=0.4, layer_lr_decay=0.8, weight_decay=1e-4)
    (a, model_a), (b, model_b) = run(cell, digits), run(changed(cell, training="layerwise"), digits)
    robin_only = {"robin_round", "robin_layer", "robin_order", "round", "order_position"}
    assert set(a.variables) - robin_only == set(b.variables)
    for name in set(b.variables) - MEMORY - {"train_seconds"}:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert all(torch.equal(v, model_b.state_dict()[k]) for k, v in model_a.state_dict().items())


# --- orders, stages, the final network -----------------------------------------------------------------------------

def test_random_order_is_seeded_a_permutation_per_round_and_not_bottom_up():
    a, b = layer_orders(5, 6, True, 0), layer_orders(5, 6, True, 0)
    assert a == b and a != layer_orders(5, 6, True, 1)
    assert all(sorted(order) == list(range(5)) for order in a)
    assert a != layer_orders(5, 6, False, 0) == [list(range(5))] * 6
    assert len({tuple(order) for order in a}) > 1  # a fresh permutation each round


def test_random_robin_trains_the_layers_in_its_order(digits):
    """Per logged step, the gradient RMS is recorded exactly for the layer the order says (and the output layer with
    the top layer); the order is the seeded one and changes with the seed."""
    cell = robin(training="random_robin", depth=4, rounds=3, layer_steps=2, log_every=1, grad_rms_probe=True)
    ds, _ = run(cell, digits)
    orders = layer_orders(4, 3, True, cell.run.seed)
    np.testing.assert_array_equal(ds["robin_order"].values, orders)
    steps = ds["step"].values
    expected = [orders[min(s // 8, 2)][min(s % 8 // 2, 3) if s < 24 else 3] for s in steps]
    expected[-1] = orders[-1][-1]  # the last step belongs to the last stage
    np.testing.assert_array_equal(ds["robin_layer"].values, expected)
    np.testing.assert_array_equal(ds["robin_round"].values, np.minimum(steps // 8, 2))
    rms = ds["grad_rms"].transpose("step", "layer").values
    for row, layer in zip(rms[:-1], expected[:-1], strict=True):
        trained = [layer, 4] if layer == 3 else [layer]
        assert np.isfinite(row[trained]).all() and np.isnan(np.delete(row, trained)).all()
    other, _ = run(changed(cell, seed=1), digits)
    assert not np.array_equal(other["robin_order"].values, ds["robin_order"].values)


def test_final_metrics_are_the_whole_networks_when_the_last_stage_trains_a_lower_layer(digits):
    cell = robin(training="random_robin", lr=0.02)
    assert layer_orders(3, 2, True, cell.run.seed)[-1][-1] != 2  # seed 0: the last stage trains a lower layer
    ds, model = run(cell, digits)
    assert evaluate(model, digits.test)[0] == pytest.approx(float(ds["test_acc"]))
    assert evaluate(model, digits.train)[0] == pytest.approx(float(ds["train_acc"]))
    assert float(ds["test_acc_curve"][-1]) == pytest.approx(float(ds["test_acc"]))
    assert list(ds["eval_step"].values) == sorted(set(ds["eval_step"].values))  # one evaluation per step
    assert np.isfinite(ds["layer_test_acc"]).all() and list(ds["stage"].values[[0, -1]]) == [0, 5]


def test_layer_lr_and_weight_decay_per_layer(digits):
    ds, _ = run(robin(training="random_robin", layer_lr_decay=0.8, layer_wd_growth=1.15, weight_decay=1e-4), digits)
    np.testing.assert_allclose(ds["layer_lr"], 0.05 * 0.8 ** np.arange(3))
    np.testing.assert_allclose(ds["layer_weight_decay"], 1e-4 * 1.15 ** np.arange(3))


# --- memory: every layer's training state is held -----------------------------------------------------------------

def test_peak_memory_holds_every_layers_head_and_optimizer_state(digits):
    """Round robin's step i = layer-wise stage i + the layers above i, the other heads and the other layers' SGD
    momentum buffers (closed form)."""
    widths, n_classes = [24, 16, 12], digits.n_classes
    cell = robin(depth=3, widths=widths, rounds=1, layer_steps=1, log_every=1, eval_every=1)
    layerwise = run(changed(cell, training="layerwise"), digits)[0]["layer_peak_memory_bytes"].values
    ds, _ = run(cell, digits)
    sizes = [64, *widths]
    layer = [(a + 1) * b for a, b in itertools.pairwise(sizes)]
    head = [(w + 1) * n_classes for w in widths]
    expected = [layerwise[i] + F32 * (sum(layer[i + 1:]) + sum(head) - head[i])  # resident parameters
                + F32 * (sum(layer) + sum(head) - layer[i] - head[i])  # momentum of every other layer and head
                for i in range(3)]
    np.testing.assert_array_equal(ds["layer_peak_memory_bytes"].values, expected)
    assert float(ds["peak_memory_bytes"]) == max(expected)
    assert float(ds["peak_memory_parts"].sum()) == max(expected) and np.isnan(ds["cuda_peak_memory_bytes"])


def test_optimizer_state_bytes_closed_form():
    params = list(torch.nn.Linear(6, 5).parameters())
    adam = optimizer_state_bytes(lambda ps: make_optimizer(make_cell(optimizer="adam").optimizer, ps), params)
    assert adam == F32 * (2 * 35 + 2)  # exp_avg, exp_avg_sq, a float32 step per tensor
    sgd = make_cell(optimizer="sgd", momentum=0.0)
    assert optimizer_state_bytes(lambda ps: make_optimizer(sgd.optimizer, ps), params) == 0
    momentum = changed(sgd, momentum=0.9).optimizer
    assert optimizer_state_bytes(lambda ps: make_optimizer(momentum, ps), params) == F32 * 35
    assert all(p.grad is None for p in params)  # measured on stand-ins


# --- config errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides,message", [
    ({"training": "random_robin", "model": "resnet", "depth": 20}, "training 'random_robin' needs a plain stack"),
    ({"training": "round_robin", "model": "cascade_resnet", "depth": 4, "stem_downsample": 1}, "needs a plain stack"),
    ({"training": "round_robin", "segment_size": 2}, "training 'round_robin' trains one layer per stage"),
    ({"training": "random_robin", "loss": "mse"}, "loss 'mse' is only available with backprop"),
    ({"training": "round_robin", "curvature_every": 5}, "does not run with training 'round_robin'"),
    ({"training": "random_robin", "depth": 3, "freeze_weights": "1101"}, "freeze_weights .* option of training"),
    ({"training": "round_robin", "model": "cnn", "layer_head": "decision_block", "memory_target": 0.3},
     "training 'round_robin' keeps every layer's head resident"),
])
def test_bad_robin_cells_fail_early(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_cell(make_cell(**overrides))


def test_rounds_is_checked_by_the_schema():
    config = copy.deepcopy(TINY_STUDY)
    config["fixed"].update(training="round_robin", rounds=0)
    with pytest.raises(ConfigError, match="rounds"):
        check_study(config)
    with pytest.raises(ConfigError, match="stable_rank probe reads one Linear/Conv map per layer"):
        check_cell(make_cell(model="cascade_cnn", depth=3), ["stable_rank"])


# --- stable rank ---------------------------------------------------------------------------------------------------

def numpy_stable_rank(w: np.ndarray) -> float:
    m = w.reshape(w.shape[0], -1).astype(np.float64)
    return np.linalg.norm(m, "fro") ** 2 / np.linalg.norm(m, 2) ** 2


def test_stable_rank_matches_numpy_and_its_bounds():
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (3, 40), (16, 3, 3, 3)]:
        w = rng.standard_normal(shape)
        assert stable_rank(torch.from_numpy(w).float()) == pytest.approx(numpy_stable_rank(w.astype(np.float32)),
                                                                          rel=1e-10)
        assert 1 <= stable_rank(torch.from_numpy(w)) <= min(shape[0], np.prod(shape[1:]))
    assert stable_rank(torch.outer(torch.arange(1.0, 5), torch.ones(3))) == pytest.approx(1.0)  # rank one
    assert stable_rank(torch.eye(6)) == pytest.approx(6.0)


def test_stable_rank_measurement_and_gap_against_numpy(digits):
    cell = make_cell(model="cnn", depth=3, width=4)
    nets = {"init": build_model(cell, digits.input_shape, digits.n_classes),
            "final": build_model(changed(cell, seed=1), digits.input_shape, digits.n_classes)}
    ds = run_stable_rank(cell, digits, nets, torch.device("cpu"))
    assert ds["stable_rank"].dims == ("checkpoint", "layer") and list(ds["layer"].values) == [0, 1, 2, 3]
    for name, net in nets.items():
        maps = [net.layers[0], net.layers[1], net.layers[2][1], net.head]  # conv, conv, (flatten, linear), output
        np.testing.assert_allclose(ds["stable_rank"].sel(checkpoint=name),
                                   [numpy_stable_rank(m.weight.detach().numpy()) for m in maps], rtol=1e-10)
    ranks = np.exp(np.random.default_rng(1).standard_normal((3, 2, 4)))  # training x checkpoint x layer
    study = xr.Dataset({"stable_rank": (("training", "checkpoint", "layer"), ranks)},
                       coords={"training": ["backprop", "layerwise", "random_robin"], "checkpoint": ["init", "final"]})
    summary = stable_rank_summary(study)
    gap = np.abs(np.log(ranks) - np.log(ranks[0])).mean(-1)
    np.testing.assert_allclose(study["stable_rank_gap"].values, gap)
    assert summary == pytest.approx({"stable_rank_gap_layerwise": gap[1, 1], "stable_rank_gap_random_robin": gap[2, 1]})
    assert stable_rank_summary(study.sel(training=["layerwise"])) == {}
