"""'Same' padding of conv and max-pool windows, two ways (cell parameter `same_padding`).

symmetric    PyTorch's `padding = k // 2` on every side.
tensorflow   TensorFlow's 'same', which DeepOBS (paper 002's 3C3D and ALL-CNN-C) and its PyTorch port use: the
             output has ceil(n / stride) pixels and the window needs (out - 1) * stride + k - n pixels of padding in
             all, half before and the odd one after (bottom/right).

They differ where that total is odd: a stride-2 3x3 window on an even size needs one pixel, which TensorFlow puts at
the bottom/right only, while PyTorch's padding 1 pads both sides (the same output size, windows shifted by a pixel).
That is every stride-2 window of the two nets at 32x32 CIFAR inputs. Max-pool pads with -inf (TensorFlow ignores
the padding), so a pool placed before the ReLU gives what TensorFlow's pool after it gives.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SAME_PADDINGS = ("symmetric", "tensorflow")


def tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) of one spatial dim."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float) -> torch.Tensor:
    (top, bottom), (left, right) = (tf_same_pad(n, k, s) for n, k, s in zip(x.shape[-2:], kernel, stride, strict=True))
    return F.pad(x, (left, right, top, bottom), value=value)


class TFSameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'same' padding, from the input's size at each call (zeros)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad(x, self.kernel_size, self.stride, 0.0))


class TFSameMaxPool2d(nn.MaxPool2d):
    """MaxPool2d with TensorFlow's 'same' padding (-inf: padding never wins)."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__(kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride  # ints, as constructed
        return super().forward(_pad(x, (k, k), (s, s), -math.inf))


def same_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: str) -> nn.Conv2d:
    """A 'same' conv, padded as `padding` (SAME_PADDINGS) says."""
    if padding == "tensorflow":
        return TFSameConv2d(c_in, c_out, kernel, stride)
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2)


def same_max_pool(kernel: int, stride: int, padding: str) -> nn.MaxPool2d:
    """A 'same' max-pool, padded as `padding` (SAME_PADDINGS) says."""
    return TFSameMaxPool2d(kernel, stride) if padding == "tensorflow" else nn.MaxPool2d(kernel, stride, kernel // 2)
