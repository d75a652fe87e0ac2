"""Paper 002's DeepOBS nets with TensorFlow's 'same' padding (`same_padding: tensorflow`, layerlab.nets.same) against
a hand-written float64 forward pass whose paddings are worked out by hand, at 32x32 (CIFAR: every stride-2 window pads
bottom/right only) and at 31x31 (odd: the first stride-2 window pads both sides); the default stays PyTorch's
symmetric padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import changed, make_cell
from torch import nn

from layerlab.catalog.checks import check_model
from layerlab.catalog.models import DeepOBSParams
from layerlab.core.config import ConfigError
from layerlab.nets.models import build_model
from layerlab.nets.same import tf_same_pad

# (top/left, bottom/right) padding of each 'same' window, worked out from TensorFlow's rule: out = ceil(n / s),
# total = (out - 1) s + k - n, the odd pixel after. 3C3D: pool 1, conv 3, pool 2 and pool 3 (conv 1 and 2 are valid).
PADS_3C3D = {32: {"pool1": (0, 1), "conv3": (1, 1), "pool2": (0, 1), "pool3": (0, 1)},  # 28 -> 14, 12 -> 6, 6 -> 3
             31: {"pool1": (1, 1), "conv3": (1, 1), "pool2": (0, 1), "pool3": (0, 1)}}  # 27 -> 14, 12 -> 6, 6 -> 3
# ALL-CNN-C: the six 3x3 same convs (stride 1, 1, 2, 1, 1, 2)
PADS_ALL_CNN_C = {32: [(1, 1), (1, 1), (0, 1), (1, 1), (1, 1), (0, 1)],  # 32 -> 16 -> 8
                  31: [(1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (0, 1)]}  # 31 -> 16 -> 8


def pad(x: np.ndarray, before_after: tuple[int, int], value: float) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), before_after, before_after), constant_values=value)


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1) -> np.ndarray:
    """Valid cross-correlation, looping over the kernel's offsets."""
    k = w.shape[-1]
    rows, cols = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], rows, cols))
    for i in range(k):
        for j in range(k):
            window = x[:, :, i:i + stride * rows:stride, j:j + stride * cols:stride]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    return out + b[None, :, None, None]


def max_pool(x: np.ndarray, before_after: tuple[int, int]) -> np.ndarray:
    """3x3 stride-2 max-pool over x padded with -inf."""
    x = pad(x, before_after, -np.inf)
    rows, cols = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    return np.max([x[:, :, i:i + 2 * rows:2, j:j + 2 * cols:2] for i in range(3) for j in range(3)], axis=0)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def maps(net: nn.Module) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net.modules()
            if isinstance(m, nn.Conv2d | nn.Linear)]


def reference_3c3d(x: np.ndarray, net: nn.Module, pads: dict) -> np.ndarray:
    """DeepOBS 3C3D: conv 5x5 valid, relu, pool; conv 3x3 valid, relu, pool; conv 3x3 same, relu, pool; FC, FC, FC."""
    (w1, b1), (w2, b2), (w3, b3), (w4, b4), (w5, b5), (w6, b6) = maps(net)
    h = max_pool(relu(conv(x, w1, b1)), pads["pool1"])
    h = max_pool(relu(conv(h, w2, b2)), pads["pool2"])
    h = max_pool(relu(conv(pad(h, pads["conv3"], 0.0), w3, b3)), pads["pool3"])
    h = relu(h.reshape(len(h), -1) @ w4.T + b4)
    h = relu(h @ w5.T + b5)
    return h @ w6.T + b6


def reference_all_cnn_c(x: np.ndarray, net: nn.Module, pads: list) -> np.ndarray:
    """ALL-CNN-C: six 3x3 same convs (strides 1, 1, 2, 1, 1, 2), 3x3 valid, 1x1, then 1x1 to classes, relu,
    global average (dropout off)."""
    weights = maps(net)
    h = x
    for (w, b), stride, p in zip(weights[:6], (1, 1, 2, 1, 1, 2), pads, strict=True):
        h = relu(conv(pad(h, p, 0.0), w, b, stride))
    for w, b in weights[6:8]:
        h = relu(conv(h, w, b))
    w, b = weights[8]
    return relu(conv(h, w, b)).mean(axis=(2, 3))


@pytest.mark.parametrize("model, reference, pads", [("cnn_3c3d", reference_3c3d, PADS_3C3D),
                                                     ("all_cnn_c", reference_all_cnn_c, PADS_ALL_CNN_C)])
@pytest.mark.parametrize("size", [32, 31])
def test_tensorflow_same_padding_matches_a_hand_written_forward_pass(model, reference, pads, size):
    torch.manual_seed(0)
    cell = make_cell(model=model, width_scale=0.125, same_padding="tensorflow", init="xavier_normal")
    net = build_model(cell, (3, size, size), 10).double().eval()
    with torch.no_grad():  # nonzero biases, so that zero padding and a zero bias cannot hide each other
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.bias.uniform_(-0.1, 0.1)
    x = torch.randn(4, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = reference(x.numpy(), net, pads[size])
    got = net(x)[0].detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # the symmetric padding (the default) with the same weights computes another function where TF pads one side
    symmetric = build_model(changed(cell, same_padding="symmetric"), (3, size, size), 10).double().eval()
    with torch.no_grad():  # the same maps in the same order (TensorFlow's pad modules shift the state-dict names)
        for own, theirs in zip(symmetric.parameters(), net.parameters(), strict=True):
            own.copy_(theirs)
    differs = np.abs(symmetric(x)[0].detach().numpy() - expected).max() / np.abs(expected).max()
    assert differs > 1e-3


def test_tf_same_pad_rule():
    assert [tf_same_pad(n, 3, 2) for n in (32, 31, 28, 27, 16, 12, 6)] == [
        (0, 1), (1, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1)]
    assert [tf_same_pad(n, 3, 1) for n in (32, 31)] == [(1, 1), (1, 1)]
    assert tf_same_pad(4, 5, 1) == (2, 2) and tf_same_pad(5, 1, 2) == (0, 0)


def test_symmetric_is_the_default_and_tensorflow_is_refused_elsewhere():
    assert make_cell()[DeepOBSParams].same_padding == "symmetric"
    with pytest.raises(ConfigError, match="same_padding tensorflow needs model 'cnn_3c3d' or 'all_cnn_c' "
                                          r"\(got 'cnn'\)"):
        check_model(make_cell(model="cnn", same_padding="tensorflow"))
    check_model(make_cell(model="all_cnn_c", same_padding="tensorflow"))
