"""Paper 002: BatchNorm variants against a float64 reference, frozen components, gamma/beta probes, thesis CNNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import changed, make_cell

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.core.store import combine_cells
from layerlab.nets.models import build_model
from layerlab.nets.norm import BN_VARIANTS, NEUTRAL, AblatedBatchNorm, batch_norm
from layerlab.probes.bn_params import norm_layers, trajectories
from layerlab.report.plots import figure
from layerlab.training.loop import train_cell
from layerlab.training.optim import make_optimizer

VARIANTS = [v for v in BN_VARIANTS if v != "none"]
EPS = 1e-5


def reference_bn(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray | None = None,
                 var: np.ndarray | None = None) -> np.ndarray:
    """Eq. 2.13-2.17 in float64, per channel (axis 1): by default with the batch mean and biased variance over all
    other axes (training), else with the given statistics (evaluation, Eq. 2.28)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    mean = x.mean(axis=axes) if mean is None else mean
    var = x.var(axis=axes) if var is None else var
    shape = [1, -1] + [1] * (x.ndim - 2)
    return gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS) + beta.reshape(shape)



def train(cell: dict, data) -> tuple[xr.Dataset, torch.nn.Module]:
    torch.set_num_threads(1)
    return train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), torch.device("cpu"))


@pytest.mark.parametrize("shape", [(16, 5), (6, 3, 4, 5)], ids=["fc", "conv"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_float64_reference(variant, shape):
    learn_gamma, learn_beta = BN_VARIANTS[variant]
    (bn,) = batch_norm(shape[1], variant)
    bn = bn.double()
    gen = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64) + 2.0
    with torch.no_grad():  # move the learnable components away from neutral; the frozen ones must stay there
        for name, learn in (("gamma", learn_gamma), ("beta", learn_beta)):
            if learn:
                getattr(bn, name).copy_(torch.randn(shape[1], generator=gen, dtype=torch.float64))
    gamma, beta = bn.gamma.detach().numpy(), bn.beta.detach().numpy()
    assert (learn_gamma or (gamma == 1).all()) and (learn_beta or (beta == 0).all())
    np.testing.assert_allclose(bn(x).detach().numpy(), reference_bn(x.numpy(), gamma, beta), rtol=1e-12, atol=1e-12)
    # evaluation uses the running statistics: one update from (0, 1) with momentum 0.1, unbiased variance
    axes = tuple(i for i in range(len(shape)) if i != 1)
    n = x.numel() // shape[1]
    mean, var = 0.1 * x.numpy().mean(axis=axes), 0.9 + 0.1 * x.numpy().var(axis=axes) * n / (n - 1)
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-12)
    np.testing.assert_allclose(bn.eval()(x).detach().numpy(), reference_bn(x.numpy(), gamma, beta, mean, var),
                               rtol=1e-12, atol=1e-12)


def test_full_variant_equals_torch_batchnorm():
    (bn,) = batch_norm(3, "bn_gamma_beta")
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.gamma.uniform_(0.5, 2), bn.beta.uniform_(-1, 1)
        ref.weight.copy_(bn.gamma), ref.bias.copy_(bn.beta)
    x = torch.randn(8, 3, 4, 4)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)


@pytest.mark.parametrize("variant", list(BN_VARIANTS))
def test_variant_parameters_and_buffers(variant):
    net = build_model(make_cell(model="fnn", depth=3, width=8, bn_variant=variant), (1, 8, 8), 10)
    norms = norm_layers(net)
    if variant == "none":
        assert norms == {} and batch_norm(8, variant) == []
        return
    assert sorted(norms) == [0, 1, 2]  # one per hidden layer, none on the output layer
    learn = dict(zip(("gamma", "beta"), BN_VARIANTS[variant], strict=True))
    names = {n.rsplit(".", 1)[-1] for n, _ in net.named_parameters()}
    for name, learnable in learn.items():
        assert (name in names) == learnable
        assert all(norms[k].learnable(name) == learnable for k in norms)
        assert f"layers.0.1.{name}" in net.state_dict()  # frozen ones are (persistent) buffers


def test_unknown_variant_and_last_layer_without_bn_are_rejected():
    with pytest.raises(ValueError, match="unknown bn_variant 'layer'"):
        batch_norm(4, "layer")
    with pytest.raises(ConfigError, match="bn_last_layer needs a BatchNorm variant"):
        check_cell(make_cell(bn_last_layer=True))
    check_cell(make_cell(bn_last_layer=True, bn_variant="bn"))


@pytest.mark.parametrize("variant", ["bn", "bn_gamma", "bn_beta"])
def test_frozen_components_do_not_change_in_training(digits, variant):
    """With SGD, momentum and weight decay on every parameter, the frozen components stay exactly neutral."""
    cell = make_cell(model="fnn", depth=3, width=16, bn_variant=variant, bn_last_layer=True, optimizer="sgd",
                     lr=0.5, momentum=0.9, weight_decay=0.01, steps=30, log_every=10)
    ds, model = train(cell, digits)
    learn = dict(zip(("gamma", "beta"), BN_VARIANTS[variant], strict=True))
    for name, neutral in NEUTRAL.items():
        values = torch.cat([getattr(bn, name) for bn in norm_layers(model).values()])
        assert values.numel() == 3 * 16 + 10  # 3 hidden layers and the output layer
        if learn[name]:
            assert not torch.all(values == neutral) and name in ds
        else:
            assert torch.all(values == neutral) and name not in ds and f"{name}_activity" not in ds
    assert not bool(ds["diverged"])


def test_recorded_trajectories_shapes_and_padding(digits):
    cell = make_cell(model="fnn", depth=2, width=12, bn_variant="bn_gamma_beta", bn_last_layer=True, steps=20,
                     log_every=10, lr=1e-2)
    ds, model = train(cell, digits)
    # layers 0, 1 hidden (12 channels), layer 2 the output layer (10 classes): padded with NaN to 12 channels
    assert ds["gamma"].dims == ("step", "layer", "channel") and ds["gamma"].shape == (3, 3, 12)
    assert list(ds["layer"].values) == [0, 1, 2] and ds["batch_entropy"].sizes["layer"] == 3
    assert np.isnan(ds["batch_entropy"].sel(layer=2)).all() and np.isfinite(ds["batch_entropy"].sel(layer=1)).all()
    assert np.isnan(ds["gamma"].sel(layer=2, channel=[10, 11])).all()
    assert np.isfinite(ds["beta"].sel(layer=2, channel=list(range(10)))).all()
    np.testing.assert_array_equal(ds["gamma"].isel(step=0).sel(layer=[0, 1]), 1.0)  # step 0: before any update
    np.testing.assert_array_equal(ds["beta_activity"].isel(step=0), 0.0)
    np.testing.assert_allclose(ds["gamma"].isel(step=-1).sel(layer=2, channel=list(range(10))),
                               norm_layers(model)[2].gamma.detach().numpy())
    assert ds["gamma_activity"].attrs["long_name"].startswith("activity of gamma")
    plain, _ = train(changed(cell, bn_variant="none", bn_last_layer=False), digits)
    assert not {"gamma", "beta", "gamma_activity", "beta_activity"} & set(plain.data_vars)
    assert "channel" not in plain.dims and plain.sizes["layer"] == 2


def test_activity_on_a_known_trajectory():
    """|gamma - 1| and |beta| averaged over channels; NaN padding ignored; layers without the parameter absent."""
    records = [
        {"gamma": {0: np.array([1.0, 1.0, 1.0]), 3: np.array([1.0, 1.0])}, "beta": {3: np.array([0.0, 0.0])}},
        {"gamma": {0: np.array([1.5, 0.5, 1.0]), 3: np.array([3.0, 1.0])}, "beta": {3: np.array([-0.2, 0.4])}},
        {"gamma": {0: np.array([2.0, 0.0, 0.1]), 3: np.array([-1.0, 1.0])}, "beta": {3: np.array([-1.0, -1.0])}},
    ]
    ds = trajectories([0, 5, 10], records)
    assert ds["gamma"].shape == (3, 2, 3) and list(ds["layer"].values) == [0, 3]
    assert np.isnan(ds["gamma"].sel(layer=3, channel=2)).all() and np.isnan(ds["beta"].sel(layer=0)).all()
    np.testing.assert_allclose(ds["gamma_activity"].sel(layer=0), [0.0, 1 / 3, 2.9 / 3], rtol=1e-6)
    np.testing.assert_allclose(ds["gamma_activity"].sel(layer=3), [0.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ds["beta_activity"].sel(layer=3), [0.0, 0.3, 1.0], rtol=1e-6)
    assert set(trajectories([0], [{}]).data_vars) == set()


def test_weight_decay_on_weights_only():
    net = build_model(make_cell(model="fnn", depth=2, width=4, bn_variant="bn_gamma_beta"), (1, 2, 2), 3)
    opt = make_optimizer(make_cell(weight_decay=0.1, weight_decay_params="weights").optimizer, list(net.parameters()))
    decayed, exempt = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert exempt["weight_decay"] == 0.0 and len(exempt["params"]) == 3 * 1 + 2 * 2  # 3 biases, 2 x (gamma, beta)
    assert len(make_optimizer(make_cell(weight_decay=0.1).optimizer, list(net.parameters())).param_groups) == 1


@pytest.mark.parametrize(("model", "shape", "hidden"), [
    ("cnn_3c3d", (3, 32, 32), [(64, 14, 14), (96, 6, 6), (128, 3, 3), (512,), (256,)]),  # DeepOBS: FC 3*3*128
    ("all_cnn_c", (3, 32, 32), [(96, 32, 32), (96, 32, 32), (96, 16, 16), (192, 16, 16), (192, 16, 16),
                                (192, 8, 8), (192, 6, 6), (192, 6, 6)]),
])
@pytest.mark.parametrize("last", [False, True])
def test_thesis_cnns(model, shape, hidden, last):
    """DeepOBS 3C3D (5 BatchNorm layers) and ALL-CNN-C (8), on CIFAR shapes; `bn_last_layer` adds one on the
    output layer (n_classes channels)."""
    net = build_model(make_cell(model=model, bn_variant="bn_gamma_beta", bn_last_layer=last, init="xavier_normal"),
                      shape, 100)
    logits, acts = net(torch.randn(2, *shape))
    assert logits.shape == (2, 100) and [tuple(a.shape[1:]) for a in acts] == hidden
    norms = norm_layers(net)
    assert sorted(norms) == list(range(len(hidden) + last))
    assert [n.gamma.numel() for n in norms.values()] == [h[0] for h in hidden] + [100] * last
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert all((m.bias == 0).all() for m in convs)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == (3 if model == "all_cnn_c" else 0)
    small = build_model(make_cell(model=model, width_scale=0.25), shape, 10)
    assert [tuple(a.shape[1:2]) for a in small(torch.randn(2, *shape))[1]] == [(h[0] // 4,) for h in hidden]
    assert not norm_layers(small) and not any(isinstance(m, AblatedBatchNorm) for m in small.modules())


def test_study_store_and_figure_with_and_without_bn(digits):
    cells, params = {}, {}
    for variant in ("none", "bn_gamma"):
        cell = make_cell(model="fnn", depth=2, width=6, bn_variant=variant, steps=10, log_every=5, lr=1e-2)
        ds, _ = train(cell, digits)
        cells[variant] = ds.assign_attrs(config=variant)
        params[variant] = {"bn_variant": variant}
    study = combine_cells(cells, params, ["bn_variant"])
    assert study["gamma"].dims == ("bn_variant", "step", "layer", "channel") and "beta" not in study
    assert np.isnan(study["gamma"].sel(bn_variant="none")).all()
    assert np.isfinite(study["gamma"].sel(bn_variant="bn_gamma")).all()
    assert study["gamma"].attrs["units"] == "1" and study["gamma_activity"].attrs["long_name"]
    fig = figure(study, {"kind": "channel_step_heatmap", "var": "gamma", "row": "bn_variant", "col": "layer",
                        "center": 1.0})
    assert [len(ax.collections) for ax in fig.axes[:4]] == [0, 0, 1, 1]  # no BatchNorm: "no data"
