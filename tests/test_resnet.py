"""Paper 004's ResNet and its last-layer diagnostics: architecture against a hand-written forward pass, type-A
shortcuts, He fan-out init, the LastBN effect at init, the per-example weight-gradient spectrum against explicit
per-sample gradients, input pooling, config errors, and a real Snakemake run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import make_cell, snakemake, write_study
from test_curvature import per_sample_grads, tiny_net
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.core.registry import register_dataset
from layerlab.core.sections import DataParams
from layerlab.core.store import read_store
from layerlab.data.datasets import DatasetUnavailable, input_shape, load, prepare
from layerlab.nets.models import build_model
from layerlab.nets.resnets import shortcut
from layerlab.probes.curvature import measure, per_example_lmax
from layerlab.training.augment import crop_flip


def resnet_cell(**overrides) -> dict:
    return make_cell(**{"model": "resnet", "depth": 20, "width": 4, "bn_variant": "bn_gamma_beta",
                        "init": "he_fan_out", **overrides})


@pytest.mark.parametrize("residual", [True, False])
def test_architecture_matches_a_hand_written_forward_pass(residual):
    """The original ResNet, and without shortcuts paper 004's VGG-style net (E7): the same convs in a plain stack."""
    torch.manual_seed(0)
    model = build_model(resnet_cell(depth=8, seed=3, residual=residual), (1, 14, 14), 10).double().eval()
    for p in model.parameters():  # non-trivial BN parameters and statistics, so that eval mode is a real check
        p.data.add_(0.1 * torch.randn_like(p))
    for name, buf in model.named_buffers():
        if "running_var" in name:
            buf.uniform_(0.5, 2.0)
    x = torch.randn(5, 1, 14, 14, dtype=torch.float64)

    def conv_bn(layer, h, stride):
        conv, bn = layer[0], layer[1]
        z = F.conv2d(h, conv.weight, stride=stride, padding=1)
        return (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5) \
            * bn.gamma[:, None, None] + bn.beta[:, None, None]

    h = F.relu(conv_bn(model.layers[0], x, 1))
    for block, stride in zip(range(3), (1, 2, 2), strict=True):  # depth 8: one block per stage
        a = F.relu(conv_bn(model.layers[1 + 2 * block], h, stride))
        b = conv_bn(model.layers[2 + 2 * block], a, 1)
        skip = h if stride == 1 else torch.cat([h[:, :, ::2, ::2], torch.zeros_like(h[:, :, ::2, ::2])], 1)
        h = F.relu(b + skip if residual else b)
    expected = model.head[-1](h.mean((2, 3)))
    logits, hidden = model(x)
    assert len(model.layers) == len(hidden) == 7  # depth - 1 hidden convs
    assert [t.shape[1:] for t in hidden[::2]] == [(4, 14, 14), (4, 14, 14), (8, 7, 7), (16, 4, 4)]
    torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize(("last_bn", "residual"), [(True, True), (False, True), (True, False)])
def test_preresnet_matches_a_hand_written_forward_pass(last_bn, residual):
    """PreResNet (last_bn: the final BN) and PreResNet_v1, against fb.resnet.torch's preresnet.lua by hand; without
    shortcuts (residual false) a plain pre-activation stack."""
    torch.manual_seed(0)
    model = build_model(resnet_cell(model="preresnet", depth=8, last_bn=last_bn, residual=residual), (1, 14, 14),
                        10).double().eval()
    for p in model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))

    def bn(module, h):
        return (h - module.running_mean[:, None, None]) / torch.sqrt(module.running_var[:, None, None] + 1e-5) \
            * module.gamma[:, None, None] + module.beta[:, None, None]

    def preact_conv(layer, h, stride):
        return F.conv2d(F.relu(bn(layer[0], h)), layer[2].weight, stride=stride, padding=1)

    x = torch.randn(3, 1, 14, 14, dtype=torch.float64)
    h = F.conv2d(x, model.layers[0][0].weight, padding=1)
    for block, stride in zip(range(3), (1, 2, 2), strict=True):
        first, second = model.layers[1 + 2 * block], model.layers[2 + 2 * block]
        if block == 0:  # both_preact
            pre = F.relu(bn(first[0], h))
            a = F.conv2d(pre, first[2].weight, padding=1)
            skip = pre
        else:
            a = preact_conv(first, h, stride)
            skip = torch.cat([h[:, :, ::2, ::2], torch.zeros_like(h[:, :, ::2, ::2])], 1)
        h = preact_conv(second, a, 1) + (skip if residual else 0)
    features = F.relu(bn(model.head[0], h) if last_bn else h).mean((2, 3))
    logits, hidden = model(x)
    assert len(hidden) == 7 and sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 7
    torch.testing.assert_close(logits, model.head[-1](features), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hidden[-1], h, rtol=1e-12, atol=1e-12)


def test_type_a_shortcut():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    assert shortcut(x, torch.empty(2, 3, 5, 5)) is x
    out = shortcut(x, torch.empty(2, 6, 3, 3))
    assert out.shape == (2, 6, 3, 3)
    assert torch.equal(out[:, :3], x[:, :, [0, 2, 4]][:, :, :, [0, 2, 4]])
    assert not out[:, 3:].any()


def test_he_fan_out_init():
    model = build_model(resnet_cell(depth=8, width=64, seed=1), (3, 8, 8), 10)
    conv = model.layers[-1][0].weight  # 256 x 256 x 3 x 3
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (9 * conv.shape[0])), rel=0.02)
    fc = model.head[-1]
    assert not fc.bias.any() and fc.weight.abs().max() <= 1 / math.sqrt(fc.weight.shape[1])


def test_last_bn_removes_the_depth_growth_of_the_last_layer_input():
    """Seed notes 5(b): at init lambda_max(Sigma_x) of the classifier input grows with depth in the original
    ResNet and stays flat with LastBN."""
    torch.manual_seed(0)
    x, y = torch.randn(256, 1, 14, 14), torch.randint(0, 10, (256,))
    lmax = {(d, lb): measure(build_model(resnet_cell(depth=d, last_bn=lb), (1, 14, 14), 10), x, y,
                             "empirical")[-1]["lmax_x"] for d in (20, 56) for lb in (False, True)}
    assert lmax[56, False] > 2 * lmax[20, False]
    assert lmax[56, False] > 5 * lmax[56, True]
    assert lmax[20, True] < 20 and lmax[56, True] < 20  # BN output: E[x^2] ~ 1 per feature, 16 features


def test_per_example_gradient_spectrum_against_explicit_per_sample_grads():
    torch.manual_seed(0)
    model = tiny_net(depth=2)
    x, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    grads = per_sample_grads(model, x, y)["head.weight"].flatten(1)  # (m, out * in)
    reference = np.linalg.eigvalsh((grads.T @ grads / len(y)).numpy())[-1]
    assert measure(model, x, y, "empirical")[-1]["lmax_wgrad"] == pytest.approx(reference, rel=1e-10)
    a, d = torch.randn(7, 3), torch.randn(7, 2)
    explicit = torch.stack([torch.outer(di, ai).flatten() for ai, di in zip(a, d, strict=True)]).double()
    assert per_example_lmax(a, d) == pytest.approx(np.linalg.eigvalsh((explicit.T @ explicit / 7).numpy())[-1])
    assert math.isnan(per_example_lmax(torch.randn(4, 2, 3, 3), torch.randn(4, 5, 3, 3)))


def test_input_pooling(tmp_path):
    path = tmp_path / "digits.npz"
    meta = prepare("digits", path, tmp_path)
    assert input_shape(meta, 2) == (1, 4, 4)
    full = load(path, data=DataParams(input_scaling="unit"))
    pooled = load(path, data=DataParams(input_scaling="unit", input_pool=2))
    blocks = full.train.x.numpy().reshape(-1, 1, 4, 2, 4, 2).mean((3, 5))
    np.testing.assert_allclose(pooled.train.x.numpy(), blocks, rtol=1e-6)
    standardized = load(path, data=DataParams(input_pool=2)).train.x
    assert standardized.mean().item() == pytest.approx(0, abs=1e-5)
    assert standardized.std().item() == pytest.approx(1, rel=1e-5)
    with pytest.raises(DatasetUnavailable, match="input_pool 16 is larger"):
        load(path, data=DataParams(input_pool=16))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model": "resnet", "depth": 21}, "depth is 6n \\+ 2"),
    ({"model": "fnn", "last_bn": True}, "last_bn .* needs model 'resnet' or 'preresnet'"),
    ({"model": "cnn", "residual": False}, "residual \\(false removes the shortcuts\\) needs model 'resnet' or "
     "'preresnet' \\(got 'cnn'\\)"),
    ({"model": "resnet", "depth": 20, "bn_variant": "bn", "bn_last_layer": True}, "bn_last_layer is not defined"),
    ({"model": "resnet", "depth": 8, "freeze_weights": "1111111"}, "one digit per layer .* 8 \\(got"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_cell(make_cell(**overrides))
    check_cell(make_cell(model="resnet", depth=8, freeze_weights="11110111"))


def test_last_layer_study_runs(tmp_path):
    """ResNet vs ResNet_LastBN through the real workflow: curvature of every conv and the classifier, the
    last-layer diagnostics and the test error per depth."""
    write_study(tmp_path, {
        "study": "tiny_last_layer",
        "grid": {"depth": [8, 14], "last_bn": [False, True]},
        "fixed": {"dataset": "digits", "model": "resnet", "width": 2, "bn_variant": "bn_gamma_beta",
                  "init": "he_fan_out", "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
                  "weight_decay": 1e-4, "lr_milestones": [10], "steps": 20, "log_every": 5, "eval_every": 10,
                  "curvature_every": 5, "curvature_samples": 64},
        "plots": [{"name": "test_error", "kind": "metric_vs_axis", "metric": "test_error", "x": "depth",
                   "hue": "last_bn"}],
    })
    snakemake(tmp_path)
    ds = read_store(tmp_path / "results/tiny_last_layer/metrics.zarr")
    assert ds["last_lmax_x"].dims == ("depth", "last_bn", "step")
    assert list(ds["depth"].values) == [8, 14]  # numeric axes ascending, though cell ids sort "depth~14" first
    assert ds["last_lmax_x"].sizes["step"] == 5
    np.testing.assert_allclose(ds["test_error"], 1 - ds["test_acc"], rtol=1e-6)
    for depth in (8, 14):  # depth - 1 convs + the classifier, NaN-padded to the deepest
        lmax = ds["lmax_x"].sel(depth=depth, last_bn=False).isel(step=0)
        assert int(lmax.notnull().sum()) == depth
        assert float(ds["last_lmax_x"].sel(depth=depth, last_bn=False).isel(step=0)) == float(lmax.dropna("layer")[-1])
    wgrad = ds["lmax_wgrad"].sel(depth=14, last_bn=True)
    assert int(wgrad.notnull().sum()) == 5  # output layer only, at each measurement
    cell = read_store(tmp_path / "results/tiny_last_layer/cells/depth~8/last_bn~true/train.zarr")
    assert isinstance(cell, xr.Dataset) and cell.attrs["cell_id"] == "depth~8/last_bn~true"
    assert (tmp_path / "results/tiny_last_layer/figures/test_error.png").stat().st_size > 10_000


def test_crop_flip_against_a_per_image_reference():
    x = torch.randn(6, 2, 5, 7)
    out = crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    draws = torch.Generator().manual_seed(3)
    flip, dy, dx = (torch.randint(0, k, (6,), generator=draws) for k in (2, 5, 5))
    for i in range(6):
        image = x[i].numpy()[:, :, ::-1] if flip[i] else x[i].numpy()
        padded = np.pad(image, ((0, 0), (2, 2), (2, 2)), mode="reflect")
        np.testing.assert_array_equal(out[i].numpy(), padded[:, dy[i] : dy[i] + 5, dx[i] : dx[i] + 7])
    assert len({(int(a), int(b), int(c)) for a, b, c in zip(flip, dy, dx, strict=True)}) > 1


def rgb_images(spec, downloads) -> tuple[dict, dict]:
    """Colour channels of very different ranges (up to 40, 120, 250), two classes."""
    rng = np.random.default_rng(0)
    images = {f"x_{s}": (rng.random((n, 3, 4, 4)) * [[[40]], [[120]], [[250]]]).astype(np.uint8)
              for s, n in (("train", 50), ("test", 10))}
    labels = {f"y_{s}": rng.integers(0, 2, n) for s, n in (("train", 50), ("test", 10))}
    return {**images, **labels}, {}


def test_per_channel_standardization(tmp_path):
    register_dataset("rgb", rgb_images, shape=(3, 4, 4), classes=2, splits=(50, 10),
                     provenance={"source": "generated", "license": "none", "split": "50/10", "scale": 255.0})
    path = tmp_path / "rgb.npz"
    prepare("rgb", path, tmp_path)
    x = load(path, data=DataParams(input_scaling="standardize_channels")).train.x
    assert x.shape == (50, 3, 4, 4)
    np.testing.assert_allclose(x.mean((0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x.std((0, 2, 3)).numpy(), 1, rtol=1e-5)
