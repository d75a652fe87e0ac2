"""Paper 004, Sec. 4.2 / Fig. A12: dying and full neurons of every hidden layer during training.

A unit is *dying* if its output is 0 for every example of the training set, and *full* if it is active (> 0) for
every one. Counted at `neuron_every` steps (and the last) on the first `neuron_samples` training rows (0: the whole
training split), in one forward pass in training mode (BatchNorm normalizes with the statistics of those rows,
its running statistics are left as they were). A conv layer's units are its (channel, position) outputs.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from layerlab.catalog.probes import NeuronParams
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network, kept_buffers
from layerlab.probes.base import StepState, TrainingProbe, step_layer_dataset
from layerlab.training.optim import logged_steps


def neuron_states(hidden: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(dying, full) unit counts per hidden layer from each layer's outputs on the same examples (first dim)."""
    active = [h.flatten(1) > 0 for h in hidden]
    return (np.array([int((~a).all(0).sum()) for a in active], dtype=float),
            np.array([int(a.all(0).sum()) for a in active], dtype=float))


class NeuronStatesProbe(TrainingProbe):
    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.schedule = logged_steps(cell.run.steps, cell[NeuronParams].neuron_every)
        n = cell[NeuronParams].neuron_samples or len(data.train.y)
        self.x = data.train.x[:n]
        self.dying: dict[int, np.ndarray] = {}
        self.full: dict[int, np.ndarray] = {}

    def after_forward(self, state: StepState) -> None:
        if state.step in self.schedule and state.step not in self.dying:
            with torch.no_grad(), kept_buffers(state.model):
                _, hidden = state.model(self.x)
            self.dying[state.step], self.full[state.step] = neuron_states(hidden)

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        measured = sorted(self.dying)
        return step_layer_dataset(measured, {"n_dying": self.dying, "n_full": self.full})
