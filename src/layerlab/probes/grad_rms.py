"""Per-layer gradient RMS (paper 001, Oland's thesis: chapter 3's G and chapter 4's gradient amplification).

The RMS over the entries of dL/dW of every layer's weight (the Linear/Conv2d map of each hidden layer and of the
output layer, index = number of hidden layers), read after training's own backward pass and before the optimizer
step: the gradient of that step's mini-batch, at no extra cost.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.probes import weight_entropy
from layerlab.probes.curvature import measured_layers, unfrozen_parameters
from layerlab.store import describe

DESCRIPTIONS = {
    "grad_rms": ("RMS of dL/dW of the layer's weight (training mini-batch)", "1"),
    **weight_entropy.DESCRIPTIONS,
    "sent_bits": ("bits per weight N of the last compression", "bit/weight"),
    "sent_huffman_bits": ("Huffman bits per weight of the last compression", "bit/weight"),
}


def layer_grad_rms(layers: list[nn.Module]) -> np.ndarray:
    """RMS of dL/dW of the `weight` of each module in `layers` as left by the last backward (NaN: no gradient)."""
    out = np.full(len(layers), np.nan)
    for k, m in enumerate(layers):
        if m.weight.grad is not None:
            out[k] = float(m.weight.grad.detach().double().pow(2).mean().sqrt())
    return out


def step_layer_dataset(steps: list[int], records: dict[str, dict[int, np.ndarray]]) -> xr.Dataset:
    """(step, layer) variables (grad_rms, weight_entropy, huffman_bits) from {name: {step: per-layer values}};
    steps without a record are NaN (the gradient at the last step, where no update happens, or a diverged step)."""
    n_layers = max(len(v) for rec in records.values() for v in rec.values())
    missing = np.full(n_layers, np.nan)
    data = {name: (("step", "layer"), np.stack([rec.get(s, missing) for s in steps]).astype(np.float32))
            for name, rec in records.items() if rec}
    return describe(xr.Dataset(data, coords={"step": np.asarray(steps), "layer": np.arange(n_layers)}), DESCRIPTIONS)


class WeightProbes:
    """The cell's per-layer weight probes and the chapter-3 compression, hooked into the training loop:
    `logged(step)` at a logged step's forward pass (weight entropy of the weights after `step` updates, and the bit
    rates of the last compression), `backward(step)` after its backward (gradient RMS), `updated(step)` after the
    optimizer step (compression)."""

    def __init__(self, cell: dict, model: nn.Module):
        self.bits, self.grad = cell["weight_entropy_bits"], cell["grad_rms_probe"]
        self.quantize_bits, self.quantize_every = cell["quantize_bits"], cell["quantize_every"]
        self.floor = cell["quantize_floor"]
        on = self.bits or self.grad or self.quantize_bits
        self.layers = measured_layers(model) if on else []
        trained = {id(p) for p in unfrozen_parameters(model, cell["freeze_weights"])} if on else set()
        self.frozen = [id(m.weight) not in trained for m in self.layers]  # grads of frozen weights accumulate
        self.records: dict[str, dict[int, np.ndarray]] = {}
        self.sent: dict[str, np.ndarray] = {}  # bit rates of the last compression

    def logged(self, step: int) -> None:
        if self.bits:
            for name, values in weight_entropy.layer_weight_stats(self.layers, self.bits).items():
                self.records.setdefault(name, {})[step] = values
        for name, values in self.sent.items():
            self.records.setdefault(name, {})[step] = values

    def backward(self, step: int, logged: bool) -> None:
        if self.grad and logged:
            rms = layer_grad_rms(self.layers)
            rms[self.frozen] = np.nan
            self.records.setdefault("grad_rms", {})[step] = rms

    def compression_bits(self) -> list[int]:
        """N per layer: `quantize_bits`, or with a floor c the thesis's rule N = H_M + c (rounded up, at least 1)
        capped at `quantize_bits` (the thesis's "ceiling:floor"), H_M the layer's weight entropy at M bits."""
        if self.floor is None:
            return [self.quantize_bits] * len(self.layers)
        h = weight_entropy.layer_weight_stats(self.layers, self.bits)["weight_entropy"]
        return [self.quantize_bits if not np.isfinite(x) else min(self.quantize_bits, max(1, math.ceil(x + self.floor)))
                for x in h]

    @torch.no_grad()
    def updated(self, step: int) -> None:
        """After update `step` (0-based): compress every `quantize_every`-th update's weights and biases."""
        if not (self.quantize_bits and (step + 1) % self.quantize_every == 0):
            return
        bits = self.compression_bits()
        huffman = np.full(len(self.layers), np.nan)
        for k, (m, n) in enumerate(zip(self.layers, bits, strict=True)):
            if torch.isfinite(m.weight).all():
                huffman[k] = weight_entropy.huffman_bits(weight_entropy.histogram(m.weight, n))
            for p in (m.weight, m.bias):
                if p is not None:
                    p.copy_(weight_entropy.compress(p, n))
        self.sent = {"sent_bits": np.asarray(bits, dtype=float), "sent_huffman_bits": huffman}

    def dataset(self, steps: list[int]) -> xr.Dataset | None:
        return step_layer_dataset(steps, self.records) if self.records else None
