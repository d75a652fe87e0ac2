"""Cell packs (layerlab.training.pack, .fused, .fused_optim): a cell trained in a pack equals the same cell trained
alone, bit for bit on the CPU (its metrics, final weights, checkpoints), whatever its mates; every model fuses
exactly; the fused optimizer step equals torch's Adam and SGD with per-model hyperparameters."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import make_cell
from test_checkpoint import WALL_TIMES, StopAt
from torch import nn
from torch.nn import functional as F

from layerlab.nets.models import build_model
from layerlab.training.checkpoint import Interrupted
from layerlab.training.fused import ModelRNG, fuse
from layerlab.training.fused_optim import FusedOptimizer, FusedParam
from layerlab.training.loop import train_cell
from layerlab.training.pack import build, train_pack


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes (equal bits, not just equal values: -0.0 differs from 0.0)."""
    return t.detach().contiguous().view(-1).view(torch.uint8) if t.is_floating_point() else t


def assert_bitwise(a: torch.Tensor, b: torch.Tensor, what: str = "") -> None:
    assert a.shape == b.shape and torch.equal(bits(a), bits(b)), what


def assert_same_cell(a: tuple[xr.Dataset, dict], b: tuple[xr.Dataset, dict], name: str = "") -> None:
    """Every variable but wall times equal (NaN where NaN), every weight bitwise equal."""
    (ds_a, weights_a), (ds_b, weights_b) = a, b
    assert set(ds_a.variables) == set(ds_b.variables), name
    for var in set(ds_a.variables) - WALL_TIMES:
        np.testing.assert_array_equal(ds_a[var].values, ds_b[var].values, err_msg=f"{name}: {var}")
        assert ds_a[var].attrs == ds_b[var].attrs, f"{name}: {var}"
    assert weights_a.keys() == weights_b.keys()
    for k in weights_a:
        assert_bitwise(weights_a[k], weights_b[k], f"{name}: {k}")


def alone(cell: dict, data, checkpoint=None) -> tuple[xr.Dataset, dict]:
    torch.set_num_threads(1)
    model = build_model(cell, data.input_shape, data.n_classes)
    ds, model = train_cell(cell, data, model, torch.device("cpu"), checkpoint)
    return ds, {k: v.clone() for k, v in model.state_dict().items()}


def packed(cells: dict[str, dict], data, checkpoints: dict | None = None,
           fuse_convolutions: bool | None = None) -> dict[str, tuple[xr.Dataset, dict]]:
    torch.set_num_threads(1)
    built = {name: build(cell, data) for name, cell in cells.items()}
    results = train_pack(cells, {name: data for name in cells}, built, torch.device("cpu"),
                         checkpoints or dict.fromkeys(cells), fuse_convolutions=fuse_convolutions)
    return {name: (ds, {k: v.clone() for k, v in model.state_dict().items()}) for name, (ds, model) in results.items()}


# --- fused networks ---------------------------------------------------------------------------------------------

NETWORKS = {  # (cell overrides, input shape)
    "fnn": (dict(depth=4, width=24), (1, 8, 8)),
    "fnn_bn_bias_free": (dict(depth=3, width=16, bias=False, bn_variant="bn_gamma", bn_last_layer=True), (1, 8, 8)),
    "cnn": (dict(model="cnn", depth=3, width=4, bn_variant="bn_beta"), (1, 8, 8)),
    "cnn_3c3d": (dict(model="cnn_3c3d", width_scale=0.1, bn_variant="bn"), (3, 16, 16)),
    "all_cnn_c_dropout": (dict(model="all_cnn_c", width_scale=0.05), (3, 16, 16)),
    "cnn_3c3d_tensorflow_padding": (dict(model="cnn_3c3d", width_scale=0.1, bn_variant="bn",
                                         same_padding="tensorflow"), (3, 16, 16)),
    "all_cnn_c_tensorflow_padding": (dict(model="all_cnn_c", width_scale=0.05, same_padding="tensorflow"),
                                     (3, 16, 16)),
    "resnet": (dict(model="resnet", depth=8, width=4, bn_variant="bn_gamma_beta"), (3, 16, 16)),
    "preresnet_last_bn": (dict(model="preresnet", depth=8, width=4, bn_variant="bn_gamma_beta", last_bn=True),
                          (3, 16, 16)),
    "cascade_cnn": (dict(model="cascade_cnn", depth=4, width=4, stem_downsample=1), (1, 12, 12)),
    "cascade_resnet": (dict(model="cascade_resnet", depth=4, width=4, stem_downsample=1), (1, 12, 12)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_fused_network_equals_each_network(name):
    """Outputs, hidden layers, gradients, BatchNorm running statistics and dropout masks of the fused network equal
    those of each network alone (its rows of the stacked batch, its RNG stream), bit for bit."""
    torch.set_num_threads(1)
    overrides, shape = NETWORKS[name]
    k, batch = 3, 8
    nets = [build_model(make_cell(seed=s, **overrides), shape, 5) for s in range(k)]
    alone_nets = copy.deepcopy(nets)
    xs, ys = [torch.randn(batch, *shape) for _ in range(k)], [torch.randint(0, 5, (batch,)) for _ in range(k)]
    states = []
    for s in range(k):
        torch.manual_seed(100 + s)
        states.append(torch.get_rng_state())
    expected = []
    for net, x, y, state in zip(alone_nets, xs, ys, states, strict=True):
        torch.set_rng_state(state)
        logits, hidden = net(x)
        F.cross_entropy(logits, y).backward()
        expected.append((logits, hidden, torch.get_rng_state()))
    rng = ModelRNG(list(states))
    fused = fuse(nets, rng)
    logits, hidden = fused(torch.cat(xs))
    torch.stack([F.cross_entropy(lk, y) for lk, y in zip(logits.chunk(k), ys, strict=True)]).sum().backward()
    grads = {name: p.grad for name, p in fused.named_parameters()}
    for i, (net, ref) in enumerate(zip(nets, alone_nets, strict=True)):
        assert_bitwise(logits.chunk(k)[i], expected[i][0], "logits")
        for h, h_ref in zip(hidden, expected[i][1], strict=True):
            assert_bitwise(h.chunk(k)[i], h_ref, "hidden")
        for (p_name, _), p_ref in zip(net.named_parameters(), ref.parameters(), strict=True):
            assert_bitwise(grads[p_name][i], p_ref.grad, p_name)
        for (b_name, b), b_ref in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
            assert_bitwise(b, b_ref, b_name)  # the nets hold views of the fused state: running statistics too
        assert_bitwise(rng.states[i], expected[i][2], "rng stream")


def test_fused_network_trains_through_the_models_own_parameters():
    nets = [build_model(make_cell(depth=2, width=8, seed=s), (1, 4, 4), 3) for s in range(2)]
    fused = fuse(nets, ModelRNG([torch.get_rng_state()] * 2))
    with torch.no_grad():
        next(fused.parameters()).add_(1.0)
    assert_bitwise(next(nets[1].parameters()), next(fused.parameters())[1])


# --- fused optimizer ---------------------------------------------------------------------------------------------

OPTIMIZERS = {
    "adam_shared": ("adam", [dict(lr=1e-3, weight_decay=0.0)] * 4),
    "adam_per_model": ("adam", [dict(lr=1e-3 * (k + 1), weight_decay=[0, 1e-4, 1e-4, 3e-2][k]) for k in range(4)]),
    "sgd_per_model": ("sgd", [dict(lr=0.01 * (k + 1), weight_decay=[0, 1e-4, 1e-3, 0][k]) for k in range(4)]),
    "sgd_momentum": ("sgd", [dict(lr=0.01 * (k + 1), weight_decay=[0, 1e-4, 1e-3, 0][k],
                                  momentum=[0.9, 0.5, 0.9, 0.99][k]) for k in range(4)]),
    "sgd_nesterov": ("sgd", [dict(lr=0.01 * (k + 1), weight_decay=1e-4, momentum=[0.9, 0.5, 0.9, 0.99][k],
                                  nesterov=True) for k in range(4)]),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_optimizer_equals_torch(name):
    """Seven steps (an LR milestone at 3) of K models with their own lr, weight decay and momentum: parameters and
    optimizer states equal torch's own optimizer on each model, bit for bit."""
    torch.set_num_threads(1)
    kind, hypers = OPTIMIZERS[name]
    make = torch.optim.Adam if kind == "adam" else torch.optim.SGD

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(13, 37), nn.ReLU(), nn.Linear(37, 10))

    refs = [net(k) for k in range(len(hypers))]
    models = copy.deepcopy(refs)
    ref_opts = [make(m.parameters(), **h) for m, h in zip(refs, hypers, strict=True)]
    opts = [make(m.parameters(), **h) for m, h in zip(models, hypers, strict=True)]
    schedules = [torch.optim.lr_scheduler.MultiStepLR(o, [3], 0.1) for o in ref_opts + opts]
    fused = fuse(models, ModelRNG([torch.get_rng_state()] * len(models)))
    named = [dict(m.named_parameters()) for m in models]
    optimizer = FusedOptimizer([FusedParam.of_leaf(p, [n[name] for n in named], opts)
                                for name, p in fused.named_parameters()])
    generator = torch.Generator().manual_seed(0)
    for _ in range(7):
        xs = [torch.randn(16, 13, generator=generator) for _ in refs]
        ys = [torch.randint(0, 10, (16,), generator=generator) for _ in refs]
        for m, o, x, y in zip(refs, ref_opts, xs, ys, strict=True):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
            o.step()
        optimizer.zero_grad()
        out = fused(torch.cat(xs)).chunk(len(refs))
        torch.stack([F.cross_entropy(o, y) for o, y in zip(out, ys, strict=True)]).sum().backward()
        optimizer.step()
        for o in opts:
            o._opt_called = True
        for s in schedules:
            s.step()
    for m, r, o, ro in zip(models, refs, opts, ref_opts, strict=True):
        for p, q in zip(m.parameters(), r.parameters(), strict=True):
            assert_bitwise(p, q)
            assert o.state[p].keys() == ro.state[q].keys()
            for key in o.state[p]:
                assert_bitwise(o.state[p][key], ro.state[q][key], key)


# --- packed cells equal cells alone -----------------------------------------------------------------------------

BASE = dict(depth=4, width=32, steps=24, batch_size=32, log_every=4, eval_every=8)
PACKED = {  # each trained alone, in a pack of two with a different mate, and in a pack of all of them
    "plain_adam": dict(seed=0),
    "lbe": dict(seed=1, loss="ce_lbe", lbe_beta=0.05, lbe_alpha=0.8, lr=2e-3),
    "bn_sgd_nesterov_milestones": dict(seed=2, bn_variant="bn_gamma_beta", optimizer="sgd", lr=0.05, momentum=0.9,
                                       nesterov=True, weight_decay=1e-4, lr_milestones=[10]),
    "probes_grad_bn_entropy": dict(seed=3, bn_variant="bn_gamma", grad_rms_probe=True, weight_entropy_bits=4,
                                   neuron_every=8, weight_decay=1e-3),
    "curvature_compression": dict(seed=4, curvature_every=8, curvature_labels="sampled", curvature_samples=64,
                                  quantize_bits=6, quantize_every=3, weight_entropy_bits=4),
    "fewer_steps_crop_flip": dict(seed=5, steps=13, augment="crop_flip", lr=3e-4),
    "representation_k_filter": dict(seed=6, representation_every=12, representation_samples=200, representation_k=5,
                                    k_filter=3, k_filter_batch=500),
}
MATES = {"plain_adam": "lbe", "lbe": "fewer_steps_crop_flip", "bn_sgd_nesterov_milestones": "plain_adam",
         "probes_grad_bn_entropy": "curvature_compression", "curvature_compression": "representation_k_filter",
         "fewer_steps_crop_flip": "probes_grad_bn_entropy", "representation_k_filter": "plain_adam"}


@pytest.fixture(scope="module")
def all_packed(digits):
    cells = {name: make_cell(**{**BASE, **o}) for name, o in PACKED.items()}
    return packed(cells, digits)


@pytest.mark.parametrize("name", PACKED)
def test_packed_cell_equals_the_cell_alone(digits, all_packed, name):
    """Alone, in a pack of two (with a mate of other parameters), and in the pack of all of them."""
    cell = make_cell(**{**BASE, **PACKED[name]})
    reference = alone(cell, digits)
    mate = MATES[name]
    pair = packed({name: cell, mate: make_cell(**{**BASE, **PACKED[mate]})}, digits)
    assert_same_cell(reference, pair[name], f"{name} with {mate}")
    assert_same_cell(reference, all_packed[name], f"{name} with all")


def test_pack_of_sixteen_seeds_and_learning_rates(digits, caplog):
    """The packs a sweep makes: 16 cells differing in seed and lr (15 of them fused as one network), one of them
    (lr 1e12 with SGD) diverging at once; each equals its cell alone, the diverged one included."""
    cells = {f"s{s}": make_cell(**{**BASE, "seed": s, "lr": 1e-3 * (1 + s % 4), "steps": 12}) for s in range(15)}
    cells["diverges"] = make_cell(**{**BASE, "seed": 3, "optimizer": "sgd", "lr": 1e12, "steps": 12})
    with caplog.at_level(logging.INFO, logger="layerlab.training.pack"):
        results = packed(cells, digits)
    assert "fused 15 cells" in caplog.text
    assert bool(results["diverges"][0]["diverged"]) and int(results["diverges"][0]["diverged_step"]) < 12
    for name in ("s0", "s7", "s14", "diverges"):
        assert_same_cell(alone(cells[name], digits), results[name], name)


def test_killed_pack_resumes_in_another_pack(digits, tmp_path):
    """A pack stopped by a signal checkpoints every member; one member then resumes alone, another in a pack with a
    fresh cell: each equals its uninterrupted run."""
    a, b = make_cell(**{**BASE, "seed": 7}), make_cell(**{**BASE, "seed": 8, "loss": "ce_lbe", "lbe_beta": 0.02})
    checkpoints = {"a": StopAt(tmp_path / "a", a, 10), "b": StopAt(tmp_path / "b", b, 10)}
    with pytest.raises(Interrupted):
        packed({"a": a, "b": b}, digits, checkpoints)
    assert (tmp_path / "a/checkpoint.pt").exists() and (tmp_path / "b/checkpoint.pt").exists()
    from layerlab.training.checkpoint import Checkpoint
    resumed_a = alone(a, digits, Checkpoint(tmp_path / "a", a))
    fresh = make_cell(**{**BASE, "seed": 9})
    resumed_b = packed({"b": b, "fresh": fresh}, digits, {"b": Checkpoint(tmp_path / "b", b), "fresh": None})
    assert_same_cell(alone(a, digits), resumed_a, "a")
    assert_same_cell(alone(b, digits), resumed_b["b"], "b")
    assert_same_cell(alone(fresh, digits), resumed_b["fresh"], "fresh")


def test_cells_that_cannot_fuse_train_one_after_another(digits, caplog):
    """A layer-wise cell and a backprop cell of another architecture share the process, each equal to alone; the log
    names why the layer-wise one trains unfused."""
    cells = {"layerwise": make_cell(**{**BASE, "training": "layerwise", "layer_steps": 6}),
             "other_width": make_cell(**{**BASE, "width": 20})}
    with caplog.at_level(logging.INFO, logger="layerlab.training.pack"):
        results = packed(cells, digits)
    assert "fused 1 cells (other_width)" in caplog.text
    assert "layerwise trains unfused: training 'layerwise' does not run in a pack" in caplog.text
    for name, cell in cells.items():
        assert_same_cell(alone(cell, digits), results[name], name)


def test_cells_freezing_other_weights_fuse_with_their_own_kind(digits, caplog):
    """`freeze_weights` is per model, but one fused parameter is trained by all its models or by none: cells fuse
    with those that train the same weights (paper 004's weight domination study: 8 patterns x 3 seeds)."""
    patterns = {"all_a": "11111", "all_b": "11111", "first_frozen": "01111", "last_frozen": "11110"}
    cells = {name: make_cell(**BASE, seed=i, freeze_weights=p) for i, (name, p) in enumerate(patterns.items())}
    with caplog.at_level(logging.INFO, logger="layerlab.training.pack"):
        results = packed(cells, digits)
    assert "fused 2 cells (all_a, all_b)" in caplog.text
    for name, cell in cells.items():
        assert_same_cell(alone(cell, digits), results[name], name)


def test_groups_fit_the_device_budget(digits):
    """On a GPU a fused group holds at most what fits HEADROOM of the free memory: at the measured step memory of
    one cell (layerlab.training.memory), a budget of 2.5 cells' steps splits 5 cells into groups of 2, 2 and 1."""
    from layerlab.training.memory import first_batch, stage_memory
    from layerlab.training.pack import fitting, prepare

    cells = {f"s{s}": make_cell(**{**BASE, "seed": s}) for s in range(5)}
    members = [prepare(name, cell, digits, build_model(cell, digits.input_shape, digits.n_classes), None)
               for name, cell in cells.items()]
    batch = first_batch(cells["s0"].run.batch_size, digits.train.x, digits.train.y)
    one = stage_memory(members[0].stage, *batch).total
    assert one > 0
    assert [len(part) for part in fitting(members, int(2.5 * one))] == [2, 2, 1]
    assert [len(part) for part in fitting(members, None)] == [5]  # the CPU: no limit
    assert [len(part) for part in fitting(members, one // 2)] == [1] * 5  # at least one cell per group


CONV = {  # convolutional networks packed: BatchNorm per model, dropout from each cell's own RNG stream
    "resnet_sgd": dict(model="resnet", depth=8, width=4, bn_variant="bn_gamma_beta", optimizer="sgd", lr=0.05,
                       momentum=0.9, weight_decay=1e-4),
    "all_cnn_c_dropout": dict(model="all_cnn_c", width_scale=0.05, input_resize=32, batch_size=16),
}


@pytest.mark.parametrize("name", CONV)
def test_packed_conv_cells_equal_the_cells_alone(digits_path, name, caplog):
    """Fused (as on a GPU; the CPU's default trains them one after another in the pack: faster there)."""
    from layerlab.data.datasets import load

    torch.set_num_threads(1)
    overrides = {**BASE, "steps": 6, "log_every": 3, "eval_every": 6, "test_subset": 64, **CONV[name]}
    cells = {f"seed~{s}": make_cell(**overrides, seed=s) for s in range(2)}
    data = load(digits_path, torch.device("cpu"), cells["seed~0"].data)
    with caplog.at_level(logging.INFO, logger="layerlab.training.pack"):
        results = packed(cells, data, fuse_convolutions=True)
    assert "fused 2 cells (seed~0, seed~1)" in caplog.text
    for cid, cell in cells.items():
        assert_same_cell(alone(cell, data), results[cid], cid)


def test_on_the_cpu_conv_cells_train_one_after_another_by_default(digits_path, caplog):
    from layerlab.data.datasets import load

    cells = {f"seed~{s}": make_cell(**{**BASE, "steps": 4, "log_every": 2, "eval_every": 4, "test_subset": 64,
                                       **CONV["resnet_sgd"]}, seed=s) for s in range(2)}
    data = load(digits_path, torch.device("cpu"), cells["seed~0"].data)
    with caplog.at_level(logging.INFO, logger="layerlab.training.pack"):
        results = packed(cells, data)
    assert "fused 2 cells" not in caplog.text
    assert "seed~1 trains unfused: convolutions: they run per model in a fused network" in caplog.text
    assert_same_cell(alone(cells["seed~1"], data), results["seed~1"], "seed~1")


def test_plan_groups_by_the_non_per_model_keys():
    """Cells without a store, grouped by their parameters less the per-model ones (seed, lr: one group per depth and
    optimizer kind), in packs of at most max_cells, at least one per core; stored cells and lone cells stay out."""
    from layerlab.workflow.packs import plan
    from layerlab.workflow.validate import per_model_keys

    cells = {f"depth~{d}/seed~{s}/lr~{lr}": make_cell(depth=d, seed=s, lr=lr)
             for d in (3, 4) for s in range(4) for lr in (1e-3, 1e-2)}
    cells["sgd"] = make_cell(depth=3, optimizer="sgd")
    cells["sgd_momentum"] = make_cell(depth=3, optimizer="sgd", momentum=0.9)
    keys = per_model_keys()
    assert {"seed", "lr", "momentum", "lbe_beta", "steps"} <= keys and not {"depth", "width", "optimizer"} & keys
    stored = {"depth~4/seed~3/lr~0.01"}
    packs = plan(cells, stored.__contains__, keys, max_cells=8, cores=1)
    members = [m for p in packs.values() for m in p]
    # first fit, largest first: depth 3 (8 cells) fills a pack, depth 4 (7) and the plain SGD cell the next; the SGD
    # cell with momentum (another fused group) is left alone: a pack of one is its own train job
    assert sorted(members) == sorted(set(cells) - stored - {"sgd_momentum"})
    assert "depth~4/seed~3/lr~0.01" not in members  # it has a store
    assert all(len(p) <= 8 for p in packs.values())
    depth3 = [c for c in cells if c.startswith("depth~3")]
    assert any(set(depth3) <= set(p) for p in packs.values())  # the 8 cells of depth 3 fuse: one pack
    assert all(p == sorted(p) for p in packs.values()) and all(name.startswith("pack_") for name in packs)
    many = plan(cells, stored.__contains__, keys, max_cells=16, cores=4)
    assert len(many) + 1 >= 4  # split for the cores (the lone SGD-momentum cell: its own job)
    assert plan(cells, lambda c: True, keys, max_cells=16, cores=2) == {}  # everything stored: no packs
    assert plan({"only": cells["sgd"]}, lambda c: False, keys, max_cells=16, cores=1) == {}  # a lone cell: its job
    again = plan(cells, stored.__contains__, keys, max_cells=8, cores=1)
    assert again == packs  # the same plan (and pack ids) from the same cells


def test_longest_first_ranks_jobs_by_estimated_work():
    from layerlab.workflow.packs import longest_first, work

    small, deep, wide = make_cell(depth=2, width=16), make_cell(depth=8, width=16), make_cell(depth=2, width=64)
    assert work(deep) == 4 * work(small) and work(wide) == 16 * work(small)
    assert work(make_cell(depth=2, width=16, steps=50)) * small.run.steps == 50 * work(small)
    assert longest_first({"pack_a": work(small) * 5, "wide": work(wide), "deep": work(deep)}) == {
        "deep": 1, "pack_a": 2, "wide": 3}
    assert longest_first({"b": 1.0, "a": 1.0}) == {"a": 1, "b": 2}  # ties: by name, the same plan every time
