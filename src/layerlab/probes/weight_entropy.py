"""Weight entropy and bits per weight (paper 001, Oland's thesis, chapter 3).

Each layer's weight tensor is quantized to N bits by min-max binning: [w_min, w_max] split into 2^N equal bins,

    i = clamp(floor(2^N (w - w_min) / (w_max - w_min)), 0, 2^N - 1),   w' = w_min + (w_max - w_min)(i + 1/2) / 2^N,

which is Algorithm 1/2 with the seed notes' fix (section 3.6.1): the thesis's Quantize counts bins from w_max while
its decoder counts from w_min (weights come back mirrored) and maps w_min to the out-of-range index 2^N. From the
normalized 2^N-bin histogram p the probe records the entropy H_N = -sum_i p_i log2 p_i (bits) and the average
length of a Huffman code for the bin indices, sum_i p_i l_i (bits per weight; H_N <= L < H_N + 1). A layer whose
weights are all equal has one used bin: H = 0 and L = 0 (nothing to send beyond the range).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.catalog.probes import CompressionParams, WeightEntropyParams
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network, measured_layers
from layerlab.probes.base import StepState, TrainingProbe, step_layer_dataset


def quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, float, float]:
    """Bin indices in [0, 2^bits) of min-max binning, and (w_min, w_max)."""
    w_min, w_max = float(w.min()), float(w.max())
    levels = 2**bits
    span = w_max - w_min
    if not span > 0:
        return torch.zeros_like(w, dtype=torch.long), w_min, w_max
    i = torch.floor(levels * (w.double() - w_min) / span).long()
    return i.clamp_(0, levels - 1), w_min, w_max


def dequantize(i: torch.Tensor, w_min: float, w_max: float, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Bin centres (Algorithm 2): w_min + (w_max - w_min)(i + 0.5) / 2^bits; a zero range decodes to w_min."""
    span = w_max - w_min
    if not span > 0:
        return torch.full(i.shape, w_min, dtype=dtype, device=i.device)
    return (w_min + span * (i.double() + 0.5) / 2**bits).to(dtype)


@torch.no_grad()
def compress(w: torch.Tensor, bits: int) -> torch.Tensor:
    """w <- Decompress(Compress(w)): every weight replaced by its bin centre (the thesis's communicated weights)."""
    i, w_min, w_max = quantize(w, bits)
    return dequantize(i, w_min, w_max, bits, w.dtype)


def histogram(w: torch.Tensor, bits: int) -> np.ndarray:
    """Counts of the 2^bits bins."""
    i, _, _ = quantize(w.detach(), bits)
    return torch.bincount(i.flatten(), minlength=2**bits).cpu().numpy()


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy of the normalized histogram, in bits."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length in bits of every symbol of a Huffman code for `counts` (0 for unused symbols, and for the
    only symbol of a one-symbol alphabet). Ties are broken by node index (leaves by symbol, then merged nodes in
    creation order), so the lengths are deterministic; O(n log n) by parent pointers."""
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) < 2:
        return lengths
    heap = [(int(counts[s]), k) for k, s in enumerate(used)]  # nodes 0..len(used)-1 are the leaves
    heapq.heapify(heap)
    parent = [0] * (2 * len(used) - 1)
    node = len(used)
    while len(heap) > 1:
        (c1, a), (c2, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (c1 + c2, node))
        node += 1
    depth = [0] * node  # the root (last node) has depth 0; a parent is always created after its children
    for k in range(node - 2, -1, -1):
        depth[k] = depth[parent[k]] + 1
    lengths[used] = depth[: len(used)]
    return lengths


def huffman_bits(counts: np.ndarray) -> float:
    """Average Huffman code length in bits per symbol."""
    return float((counts * huffman_lengths(counts)).sum() / counts.sum())


def layer_weight_stats(layers: Sequence[nn.Linear | nn.Conv2d], bits: int) -> dict[str, np.ndarray]:
    """Per-layer weight entropy H_N and Huffman bits per weight of the `weight` of each module in `layers`."""
    counts = [histogram(m.weight, bits) if torch.isfinite(m.weight).all() else None for m in layers]
    return {"weight_entropy": np.array([np.nan if c is None else entropy_bits(c) for c in counts]),
            "huffman_bits": np.array([np.nan if c is None else huffman_bits(c) for c in counts])}


class WeightEntropyProbe(TrainingProbe):
    """`weight_entropy` and `huffman_bits` (step, layer) of the weights at the logged steps, at M bits."""


    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.layers = measured_layers(model)
        self.records: dict[str, dict[int, np.ndarray]] = {"weight_entropy": {}, "huffman_bits": {}}

    def after_forward(self, state: StepState) -> None:
        if state.logged:
            bits = self.cell[WeightEntropyParams].weight_entropy_bits
            for name, values in layer_weight_stats(self.layers, bits).items():
                self.records[name][state.step] = values

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        return step_layer_dataset(steps, self.records)


class WeightCompressionProbe(TrainingProbe):
    """The chapter-3 compression W <- Decompress(Compress(W)) of every layer's weight and bias after every
    `quantize_every`-th update, at `quantize_bits` or the dynamic N = ceil(H_M + quantize_floor); records the bit
    rates of the last compression (`sent_bits`, `sent_huffman_bits`) at the logged steps."""


    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.layers = measured_layers(model)
        self.sent: dict[str, np.ndarray] = {}  # bit rates of the last compression
        self.records: dict[str, dict[int, np.ndarray]] = {"sent_bits": {}, "sent_huffman_bits": {}}

    def after_forward(self, state: StepState) -> None:
        if state.logged:
            for name, values in self.sent.items():
                self.records[name][state.step] = values

    def compression_bits(self) -> list[int]:
        """N per layer: `quantize_bits`, or with a floor c the thesis's rule N = H_M + c (rounded up, at least 1)
        capped at `quantize_bits` (the thesis's "ceiling:floor"), H_M the layer's weight entropy at M bits."""
        compression = self.cell[CompressionParams]
        ceiling, floor = compression.quantize_bits, compression.quantize_floor
        if floor is None:
            return [ceiling] * len(self.layers)
        h = layer_weight_stats(self.layers, self.cell[WeightEntropyParams].weight_entropy_bits)["weight_entropy"]
        return [ceiling if not np.isfinite(x) else min(ceiling, max(1, math.ceil(x + floor))) for x in h]

    @torch.no_grad()
    def after_update(self, state: StepState) -> None:
        """After update `step` (0-based): compress every `quantize_every`-th update's weights and biases."""
        if (state.step + 1) % self.cell[CompressionParams].quantize_every:
            return
        bits = self.compression_bits()
        huffman = np.full(len(self.layers), np.nan)
        for k, (m, n) in enumerate(zip(self.layers, bits, strict=True)):
            if torch.isfinite(m.weight).all():
                huffman[k] = huffman_bits(histogram(m.weight, n))
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_(compress(p, n))
        self.sent = {"sent_bits": np.asarray(bits, dtype=float), "sent_huffman_bits": huffman}

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        return step_layer_dataset(steps, self.records)
