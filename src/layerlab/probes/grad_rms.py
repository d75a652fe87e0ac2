"""Per-layer gradient RMS (paper 001, Oland's thesis: chapter 3's G and chapter 4's gradient amplification).

The RMS over the entries of dL/dW of every layer's weight (the Linear/Conv2d map of each hidden layer and of the
output layer, index = number of hidden layers), read after training's own backward pass and before the optimizer
step: the gradient of that step's mini-batch, at no extra cost. Layers the stage does not train are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from torch import nn

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network, measured_layers
from layerlab.probes.base import Stage, StepState, TrainingProbe, step_layer_dataset


def layer_grad_rms(layers: Sequence[nn.Linear | nn.Conv2d]) -> np.ndarray:
    """RMS of dL/dW of the `weight` of each module in `layers` as left by the last backward (NaN: no gradient)."""
    out = np.full(len(layers), np.nan)
    for k, m in enumerate(layers):
        if m.weight.grad is not None:
            out[k] = float(m.weight.grad.detach().double().pow(2).mean().sqrt())
    return out


class GradRMSProbe(TrainingProbe):
    """`grad_rms` (step, layer) at the logged steps."""


    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.layers = measured_layers(model)
        self.records: dict[int, np.ndarray] = {}

    def start_stage(self, stage: Stage) -> None:
        trained = {id(p) for p in stage.trainable}
        self.untrained = [id(m.weight) not in trained for m in self.layers]  # their .grad is stale or absent

    def after_backward(self, state: StepState) -> None:
        if state.logged:
            rms = layer_grad_rms(self.layers)
            rms[self.untrained] = np.nan
            self.records[state.step] = rms

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        return step_layer_dataset(steps, {"grad_rms": self.records})
