"""The training-probe interface (after Cockpit's quantities): a probe keeps its own records and schedule; the one
training loop (`layerlab.training.loop`) calls its hooks and never changes when a probe is added.

Hooks, in the order the loop calls them:
- `start_stage(stage)`: a stage of the regime begins (backprop has one; layer-wise one per window);
- `after_forward(state)`: the step's forward pass is done; the weights have had `state.step` updates;
- `after_backward(state)`: the step's gradients are in `.grad` (not at the last step, nor after a non-finite loss);
- `after_update(state)`: the optimizer has updated the weights;
- `variables(steps)`: at the end, the probe's store variables (`steps`: the logged steps, the `step` coordinate).
The loop adds each variable's long_name and units from the probe's declaration (`layerlab.core.registry.ProbeSpec`).
A checkpoint (`layerlab.training.checkpoint`) saves the attributes named in `state` (the records so far; override
`state_dict`/`load_state_dict` for more, e.g. an RNG stream); a resumed run restores them and calls `start_stage`
again for the stage it resumes in.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.training.stage import Stage, StepState

__all__ = ["Stage", "StepState", "TrainingProbe", "step_layer_dataset"]  # what a probe plug-in imports

class TrainingProbe:
    """Base class: every hook does nothing."""

    state: tuple[str, ...] = ()  # attributes a checkpoint saves and restores

    def __init__(self, cell: dict, model: Network, data: Dataset):
        self.cell = cell

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.state}

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
