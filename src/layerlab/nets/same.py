"""'Same' padding of conv and max-pool windows, two ways (cell parameter `same_padding`).

symmetric    PyTorch's `padding = k // 2` on every side.
tensorflow   TensorFlow's 'same', which DeepOBS (paper 002's 3C3D and ALL-CNN-C) and its PyTorch port use: the
             output has ceil(n / stride) pixels and the window needs (out - 1) * stride + k - n pixels of padding in
             all, half before and the odd one after (bottom/right).

They differ where that total is odd: a stride-2 3x3 window on an even size needs one pixel, which TensorFlow puts at
the bottom/right only, while PyTorch's padding 1 pads both sides (the same output size, windows shifted by a pixel).
That is every stride-2 window of the two nets at 32x32 CIFAR inputs. TensorFlow's padding is a module of its own
(`TFSamePad`, no parameters) before an unpadded conv or pool, so the maps stay plain Conv2d/MaxPool2d for the probes
and for cell packs. Max-pool pads with -inf (TensorFlow ignores the padding), so a pool placed before the ReLU gives
what TensorFlow's pool after it gives.
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


class TFSamePad(nn.Module):
    """Pads as TensorFlow's 'same' does for a square `kernel` window of `stride`, from the input's size at each
    call, with `value` (0 before a conv, -inf before a max-pool)."""

    def __init__(self, kernel: int, stride: int, value: float = 0.0):
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (tf_same_pad(n, self.kernel, self.stride) for n in x.shape[-2:])
        return F.pad(x, (left, right, top, bottom), value=self.value)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, value={self.value}"


def same_conv(c_in: int, c_out: int, kernel: int, stride: int, padding: str) -> list[nn.Module]:
    """A 'same' conv padded as `padding` (SAME_PADDINGS) says: the modules of its layer, the conv last."""
    if padding == "tensorflow":
        return [TFSamePad(kernel, stride), nn.Conv2d(c_in, c_out, kernel, stride)]
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2)]


def same_max_pool(kernel: int, stride: int, padding: str) -> list[nn.Module]:
    """A 'same' max-pool padded as `padding` (SAME_PADDINGS) says: the modules of its layer, the pool last."""
    if padding == "tensorflow":
        return [TFSamePad(kernel, stride, -math.inf), nn.MaxPool2d(kernel, stride)]
    return [nn.MaxPool2d(kernel, stride, padding=kernel // 2)]
