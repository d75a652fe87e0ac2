"""The training-probe interface (after Cockpit's quantities): a probe keeps its own records and schedule; the one
training loop (`layerlab.train`) calls its hooks and never changes when a probe is added.

Hooks, in the order the loop calls them:
- `start_stage(stage)`: a stage of the regime begins (backprop has one; layer-wise one per window);
- `after_forward(state)`: the step's forward pass is done; the weights have had `state.step` updates;
- `after_backward(state)`: the step's gradients are in `.grad` (not at the last step, nor after a non-finite loss);
- `after_update(state)`: the optimizer has updated the weights;
- `variables(steps)`: at the end, the probe's store variables (`steps`: the logged steps, the `step` coordinate).
The loop adds each variable's long_name and units from the probe's declaration (`layerlab.registry.ProbeSpec`).
A checkpoint (`layerlab.checkpoint`) saves the attributes named in `state` (the records so far; override
`state_dict`/`load_state_dict` for more, e.g. an RNG stream); a resumed run restores them and calls `start_stage`
again for the stage it resumes in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.data import Dataset
from layerlab.layers import Network

Select = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# (training-row indices, x, y, step t in the stage) of a batch -> the positions in the batch to train on


@dataclass
class Stage:
    """One stage of a training regime: the network it trains, its parameters, optimizer and steps."""

    index: int
    offset: int  # global step of the stage's step 0
    steps: int  # updates in this stage
    first: bool
    last: bool
    net: nn.Module  # (x) -> (logits, hidden): what the stage evaluates
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    forward: Callable[[torch.Tensor, int], tuple[torch.Tensor, list[torch.Tensor]]]  # (x, t) with the stage's noise
    memory_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # one step's loss, for memory
    memory_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    top: int | None = None  # staged regimes: the layer whose results this stage reports
    final: nn.Module | None = None  # the last stage: the network its final evaluation reports (None: `net`)
    held: dict[str, int] = field(default_factory=dict)  # bytes per memory part (layerlab.probes.memory.PARTS)
    # the regime keeps resident beside `net` and its step (round robin: the other layers' training states)
    select: Select | None = None  # the examples of each batch the stage trains on (filtering); None: all


@dataclass
class StepState:
    """What a probe sees of one training step."""

    step: int  # global step (= updates so far)
    t: int  # step within the stage
    stage: Stage
    model: Network  # the whole network
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    hidden: list[torch.Tensor]  # every hidden layer's output
    loss: torch.Tensor
    logged: bool  # a logged step: every `log_every`, the last, and a non-finite loss
    finite: bool


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
