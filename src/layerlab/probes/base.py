"""The training-probe interface (after Cockpit's quantities): a probe keeps its own records and schedule; the one
training loop (`layerlab.training.loop`) calls its hooks and never changes when a probe is added.

Hooks, in the order the loop calls them:
- `start_stage(stage)`: a stage of the regime begins (backprop has one; layer-wise one per window);
- `after_forward(state)`: the step's forward pass is done; the weights have had `state.step` updates;
- `after_backward(state)`: the step's gradients are in `.grad` (not at the last step, nor after a non-finite loss);
- `after_update(state)`: the optimizer has updated the weights;
- `variables(steps)`: at the end, the probe's store variables (`steps`: the logged steps, the `step` coordinate).
The loop adds each variable's long_name and units from the probe's declaration (`layerlab.core.registry.ProbeSpec`).
A checkpoint (`layerlab.training.checkpoint`) saves every attribute of a probe (its records so far, schedules, RNG
streams) but what it takes from the run (`takes_from_run`: the network and its modules, the data, tensors, and lists
or tuples of these), which its constructor takes again; a resumed run restores them and calls `start_stage` again
for the stage it resumes in. Records kept as numbers, numpy arrays, lists and dicts survive a resume without a line of
code; a probe that keeps tensors across steps overrides `state_dict`/`load_state_dict`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset, Split
from layerlab.nets.layers import Network
from layerlab.training.stage import Stage, StepState

__all__ = ["Stage", "StepState", "TrainingProbe", "step_layer_dataset"]  # what a probe plug-in imports


def takes_from_run(value: Any) -> bool:
    """Whether a probe attribute is part of the run rather than a record: a module, the data, a tensor, or a
    non-empty list or tuple of these (the probe's layers, a fixed batch)."""
    if isinstance(value, list | tuple) and value:
        return all(map(takes_from_run, value))
    return isinstance(value, torch.Tensor | nn.Module | Dataset | Split)


class TrainingProbe:
    """Base class: every hook does nothing."""

    def __init__(self, cell: Cell, model: Network, data: Dataset):
        self.cell = cell

    def state_dict(self) -> dict:
        """What a checkpoint saves: every attribute but the cell and what the probe takes from the run."""
        return {name: value for name, value in vars(self).items() if name != "cell" and not takes_from_run(value)}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def start_stage(self, stage: Stage) -> None:
        pass

    def after_forward(self, state: StepState) -> None:
        pass

    def after_backward(self, state: StepState) -> None:
        pass

    def after_update(self, state: StepState) -> None:
        pass

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        return None


def step_layer_dataset(steps: list[int], records: dict[str, dict[int, np.ndarray]],
                       dim: str = "layer") -> xr.Dataset | None:
    """(step, `dim`) float32 variables from {name: {step: per-layer values}}; a logged step without a record is NaN
    (e.g. the gradient at the last step, where no update happens). None without any record."""
    records = {name: rec for name, rec in records.items() if rec}
    if not records:
        return None
    n_layers = max(len(v) for rec in records.values() for v in rec.values())
    missing = np.full(n_layers, np.nan)
    data = {name: (("step", dim), np.stack([rec.get(s, missing) for s in steps]).astype(np.float32))
            for name, rec in records.items()}
    return xr.Dataset(data, coords={"step": np.asarray(steps), dim: np.arange(n_layers)})
