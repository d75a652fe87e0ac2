"""Batch entropy (paper 000, Eq. 2-3): per-neuron Gaussian entropy of the activation across the batch.

H^l = mean_k 1/2 log(c * sigma_k^2 + eps), sigma_k the unbiased std of neuron k over the mini-batch.
The official code uses c = pi*e (every alpha in the paper was tuned with it); the paper prints c = 2*pi*e.
eps = 1 makes H >= 0 with H = 0 exactly when every neuron is constant over the batch.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.probes.base import StepState, TrainingProbe
from layerlab.training.losses import layer_entropies


class BatchEntropyProbe(TrainingProbe):
    """`batch_entropy` (step, layer) of every hidden layer at the logged steps (NaN for layers above a layer-wise
    stage's window, which its network does not compute)."""


    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.n_layers = len(model.layers)
        self.records: list[np.ndarray] = []

    @torch.no_grad()
    def after_forward(self, state: StepState) -> None:
        if state.logged:
            entropy = np.full(self.n_layers, np.nan, dtype=np.float32)
            constant = self.cell.loss.entropy_constant
            entropy[: len(state.hidden)] = layer_entropies(state.hidden, constant).cpu().numpy()
            self.records.append(entropy)

    def variables(self, steps: list[int]) -> xr.Dataset:
        entropy = np.stack(self.records).astype(np.float32)
        return xr.Dataset({"batch_entropy": (("step", "layer"), entropy)},
                          coords={"step": np.asarray(steps), "layer": np.arange(entropy.shape[1])})
