"""Paper 003's CNN and ResNet (models cascade_cnn, cascade_resnet) and their convolutional reconstruction nets,
against manual computations; a tiny cascade study with both through the real workflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_cell, snakemake, write_study
from torch import nn
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.core.store import read_store
from layerlab.measurements.cascade import conv_reconstruction, make_conv_cascade, reconstruct, run_cascade
from layerlab.nets.models import Residual, build_model


def conv_cell(**overrides) -> dict:
    return make_cell(**{"model": "cascade_cnn", "activation": "tanh", "init": "gaussian", "width": 8, "depth": 6,
                        "sigma_w2": 1.5, "sigma_b2": 2e-5, **overrides})


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Circular pad 1 of the last two dims, independently of torch (numpy 'wrap')."""
    return torch.from_numpy(np.pad(x.numpy(), [(0, 0), (0, 0), (1, 1), (1, 1)], mode="wrap"))


@pytest.mark.parametrize("model", ["cascade_cnn", "cascade_resnet"])
@pytest.mark.parametrize(("shape", "down", "sizes"), [
    ((1, 28, 28), 2, [28, 14, 7, 7, 7, 7]),   # the paper's stem: 28 -> 14 -> 7
    ((1, 8, 8), 1, [8, 4, 4, 4, 4, 4]),       # digits
    ((3, 9, 9), 2, [9, 5, 3, 3, 3, 3]),       # odd sizes, colour input
])
def test_layer_shapes_and_depth(model, shape, down, sizes):
    net = build_model(conv_cell(model=model, stem_downsample=down), shape, 10)
    logits, hidden = net(torch.rand(2, *shape))
    assert logits.shape == (2, 10) and len(hidden) == 6  # depth counts every hidden layer, stem included
    assert [h.shape[-1] for h in hidden] == sizes and all(h.shape[1] == 8 for h in hidden)
    assert all(h.abs().max() < 1 for h in hidden)  # every hidden map is a tanh output
    convs = [m for m in net.layers.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + down + (6 - 1 - down) * (2 if model == "cascade_resnet" else 1)
    assert [c.stride[0] for c in convs[: 1 + down]] == [1] + [2] * down


def test_stem_too_small_for_the_input_is_an_error():
    with pytest.raises(ValueError, match="lower stem_downsample"):
        build_model(conv_cell(stem_downsample=2), (1, 8, 8), 10)


@pytest.mark.parametrize("model", ["cascade_cnn", "cascade_resnet"])
def test_gaussian_init_statistics(model):
    """Var(W) = sigma_w2 / (C_in k^2) per conv (and / width for the classifier), Var(b) = sigma_b2."""
    sw2, sb2, width = 2.0, 0.5, 64
    net = build_model(conv_cell(model=model, sigma_w2=sw2, sigma_b2=sb2, width=width, depth=4, stem_downsample=1),
                      (1, 8, 8), 10).requires_grad_(False)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].weight.shape[1:] == (1, 3, 3)
    for conv in convs[1:]:  # 64 * 64 * 9 samples each: relative sd of the variance estimate ~0.7 %
        assert float(conv.weight.var()) == pytest.approx(sw2 / (width * 9), rel=0.05)
        assert abs(float(conv.weight.mean())) < 3 * (sw2 / (width * 9) / conv.weight.numel()) ** 0.5
    assert float(convs[0].weight.var()) == pytest.approx(sw2 / 9, rel=0.3)  # only 576 samples
    biases = torch.cat([c.bias for c in convs])
    assert float(biases.var()) == pytest.approx(sb2, rel=0.2)  # >= 320 samples
    head = net.head[-1]
    assert isinstance(head, nn.Linear) and head.bias is None  # official code: classifier without bias
    assert float(head.weight.var()) == pytest.approx(sw2 / width, rel=0.25)


def test_resnet_block_is_tanh_of_branch_plus_skip():
    """Hidden layer k of the ResNet body = tanh(b(x) + x), b = conv, circular pad, tanh, conv, circular pad."""
    torch.manual_seed(0)
    net = build_model(conv_cell(model="cascade_resnet", stem_downsample=1), (1, 8, 8), 10).requires_grad_(False)
    _, hidden = net(torch.rand(3, 1, 8, 8))
    for k in (2, 4):
        block = net.layers[k]
        assert isinstance(block, Residual)
        c1, c2 = block.branch[0], block.branch[3]
        x = hidden[k - 1]
        branch = wrap(F.conv2d(torch.tanh(wrap(F.conv2d(x, c1.weight, c1.bias))), c2.weight, c2.bias))
        torch.testing.assert_close(hidden[k], torch.tanh(branch + x))


def test_cnn_body_and_head_by_hand():
    torch.manual_seed(0)
    net = build_model(conv_cell(stem_downsample=1), (1, 8, 8), 10).requires_grad_(False)
    x = torch.rand(3, 1, 8, 8)
    logits, hidden = net(x)
    c0, c1, c2 = net.layers[0], net.layers[1], net.layers[2][0]
    torch.testing.assert_close(hidden[0], torch.tanh(F.conv2d(x, c0.weight, c0.bias, padding=1)))
    torch.testing.assert_close(hidden[1], torch.tanh(F.conv2d(hidden[0], c1.weight, c1.bias, stride=2, padding=1)))
    torch.testing.assert_close(hidden[2], wrap(torch.tanh(F.conv2d(hidden[1], c2.weight, c2.bias))))
    conv, linear = net.head[0], net.head[-1]
    pooled = torch.tanh(F.conv2d(hidden[-1], conv.weight, conv.bias)).mean((2, 3))
    torch.testing.assert_close(logits, pooled @ linear.weight.T)


@pytest.mark.parametrize("size", [5, 7, 8, 14, 28])
@pytest.mark.parametrize("stride", [1, 2])
def test_reconstruction_crop_mirrors_the_conv(size, stride):
    """The crop gives back exactly the previous map's size, aligned: with centre-tap (delta) kernels the forward
    conv picks x[s i] and its mirror puts it back at s i (zeros between for stride 2)."""
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=1)
    mirror = conv_reconstruction(conv, (size, size))
    x = torch.rand(4, 2, size, size) - 0.5
    y = conv(x)
    assert mirror(y).shape == x.shape
    with torch.no_grad():
        for m, n_in, n_out in ((conv, 2, 3), (mirror[0], 3, 2)):
            m.weight.zero_()
            m.bias.zero_()
            for i in range(min(n_in, n_out)):
                m.weight[i, i, 1, 1] = 1.0
        expected = torch.zeros_like(x)
        expected[:, :, ::stride, ::stride] = torch.tanh(x[:, :, ::stride, ::stride])
        torch.testing.assert_close(mirror(conv(x)), expected)


def test_valid_conv_with_circular_pad_is_mirrored_too():
    net = build_model(conv_cell(stem_downsample=1, depth=4), (1, 8, 8), 10)
    x = torch.rand(2, 1, 8, 8)
    cascade = make_conv_cascade(net, x)
    _, hidden = net(x)
    shapes = [x.shape, *(h.shape for h in hidden[:-1])]
    for c, h, shape in zip(cascade, hidden, shapes, strict=True):
        assert c(h).shape == shape  # c^l maps z^l to the shape of z^{l-1}
    assert reconstruct(cascade, hidden).shape == (4, 2, 1, 8, 8)


def test_reconstruction_net_learns_an_identity_layer():
    """z = x through an identity (delta-kernel) conv: the mirror reaches ~0 MSE (x small: tanh ~ linear)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for i in range(4):
            conv.weight[i, i, 1, 1] = 1.0
    mirror = conv_reconstruction(conv, (7, 7))
    optimizer = torch.optim.Adam(mirror.parameters(), lr=1e-2)
    x = 0.2 * torch.rand(64, 4, 7, 7)
    with torch.no_grad():
        baseline = float(F.mse_loss(mirror(conv(x)), x))
    for _ in range(300):
        loss = F.mse_loss(mirror(conv(x)), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert baseline > 1e-2 and loss.item() < 1e-5



def test_ordered_cnn_loses_information_near_critical_keeps_it(digits_unit):
    torch.set_num_threads(1)
    out = {}
    for sw2 in (0.5, 1.5):
        cell = conv_cell(depth=20, width=16, sigma_w2=sw2, stem_downsample=1, input_scaling="unit",
                         cascade_epochs=7, cascade_images=2)
        out[sw2] = run_cascade(cell, digits_unit, {"init": build_model(cell, (1, 8, 8), 10)}, torch.device("cpu"))
    ordered, critical = out[0.5], out[1.5]
    assert float(ordered["re_diff_entropy"][-1]) < float(critical["re_diff_entropy"][-1]) - 3
    assert ordered["reconstruction"].shape == (20, 2, 8, 8) and ordered["original"].shape == (2, 8, 8)
    assert float(ordered["re_kl"][-1]) == pytest.approx(1.0)
    assert 1 <= int(ordered["cutoff_depth"]) <= 20


def test_check_cell_accepts_the_conv_cascade_and_rejects_others():
    check_cell(conv_cell(), ["cascade"])
    check_cell(conv_cell(model="cascade_resnet"), ["cascade"])
    with pytest.raises(ConfigError, match=r"cascade probe .* needs model fnn or cascade_cnn or cascade_resnet"):
        check_cell(make_cell(model="cnn"), ["cascade"])
    with pytest.raises(ConfigError, match="has no BatchNorm"):
        check_cell(conv_cell(bn_variant="bn"))
    with pytest.raises(ConfigError, match="needs depth >= 3"):
        check_cell(conv_cell(depth=2))


STUDY = {
    "study": "tiny_cascade_conv",
    "grid": {"model": ["cascade_cnn", "cascade_resnet"], "sigma_w2": [0.5, 1.5], "depth": [3, 5]},
    "fixed": {"dataset": "digits", "input_scaling": "unit", "stem_downsample": 1, "width": 4, "activation": "tanh",
              "init": "gaussian", "sigma_b2": 2e-5, "optimizer": "sgd", "lr": 1e-3, "batch_size": 64, "steps": 10,
              "log_every": 5, "eval_every": 5, "cascade_epochs": 1, "cascade_images": 2},
    "measurements": ["cascade"],
    "trainability": {"metric": "train_acc", "threshold": 0.3},
    "plots": [
        {"name": "phase", "kind": "phase_diagram", "metric": "train_acc", "select": {"model": "cascade_cnn"}},
        {"name": "recon", "kind": "reconstructions", "row": "sigma_w2", "layers": [0, 4],
         "select": {"depth": 5, "model": "cascade_resnet"}},
    ],
}


@pytest.mark.e2e
def test_conv_cascade_study_end_to_end(tmp_path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_cascade_conv"
    assert sorted(p.parent.name for p in out.rglob("cascade.zarr")) == ["depth~5"] * 4
    ds = read_store(out / "metrics.zarr")
    assert ds["re_diff_entropy"].dims == ("model", "sigma_w2", "depth", "layer") and ds.sizes["layer"] == 5
    assert ds["reconstruction"].sizes["y"] == 8 and ds["reconstruction"].sizes["x"] == 8
    assert np.isfinite(ds["re_kl"].sel(depth=5).values).all()
    cut = ds["cutoff_depth"].sel(depth=5)
    assert ((cut >= 1) & (cut <= 5)).all()
    for depth in (3, 5):
        assert (ds["predicted_trainable"].sel(depth=depth) == (depth <= cut)).all()
    summary = pd.read_csv(out / "study_summary.csv")
    assert summary.loc[0, "cells"] == 8 and summary.loc[0, "agreement"] == pytest.approx(
        float(ds["prediction_agrees"].mean()))
    for name in ("phase", "recon"):
        assert (out / f"figures/{name}.png").stat().st_size > 10_000
