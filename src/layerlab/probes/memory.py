"""The memory probe: peak memory of one training step of each stage (`layerlab.training.memory`'s accounting), and
the ratio to a backprop step of the whole network (paper 001, Ch. 6: "relative memory")."""

from __future__ import annotations

from functools import partial

import xarray as xr

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.probes.base import TrainingProbe
from layerlab.training.memory import StepMemory, ce_step_loss, first_batch, memory_variables, stage_memory, step_memory
from layerlab.training.optim import make_optimizer
from layerlab.training.stage import Stage


class MemoryProbe(TrainingProbe):
    """Peak memory of one training step of each stage, on a copy of its network (`step_memory`); staged regimes
    add the per-layer peaks (`layer_*`, at each stage's top layer). The ratio to the backprop step of the whole
    network on the same batch is `relative_memory` (1 under backprop)."""

    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.batch = first_batch(cell.run.batch_size, data.train.x, data.train.y)
        self.n_layers = len(model.layers)
        self.stages: dict[int, tuple[StepMemory, int | None]] = {}  # stage index -> (memory, top layer)
        self.backprop = None if cell.regime.training == "backprop" else step_memory(  # staged: the reference step
            model, ce_step_loss, partial(make_optimizer, cell.optimizer), *self.batch)

    def start_stage(self, stage: Stage) -> None:
        memory = stage_memory(stage, *self.batch)
        self.stages[stage.index] = memory, stage.top  # a resumed stage measures again: the same shapes

    def variables(self, steps: list[int]) -> xr.Dataset:
        memories, tops = zip(*self.stages.values(), strict=True)
        out = memory_variables(list(memories), list(tops) if tops[0] is not None else None, self.n_layers)
        peak = float(out["peak_memory_bytes"])
        backprop = float(self.backprop.total) if self.backprop else peak
        return xr.Dataset({**out, "backprop_memory_bytes": xr.DataArray(backprop),
                           "relative_memory": xr.DataArray(peak / backprop)})
