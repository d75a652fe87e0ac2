"""The contract between a training regime and the one training loop (`layerlab.training.loop`).

A regime splits a cell's training into `n_stages` stages (backprop: one; the staged regimes: one per window or per
(round, layer)) and builds stage `index` on demand (`stage(index)`), so a resumed run builds the stage it resumes
in directly, after `load_state_dict` has restored what the regime keeps between stages. The loop calls `end_stage`
with the stage's last test evaluation (before a discarded head is gone) and `after_stage` once a stage has trained
to its end without diverging. What a memory measurement replays of a stage's step: `step_loss`, `step_optimizer`
and the bytes the regime keeps `resident` beside the stage's network.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import xarray as xr
from torch import nn

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.training.memory import LossFn, ce_step_loss
from layerlab.training.optim import make_optimizer
from layerlab.training.records import Run
from layerlab.training.stage import Stage


class Regime:
    """Supplies the stages of the training loop, and may add store variables. `extra` are parameters trained with
    the network (LBE's alpha)."""

    n_stages: int = 1

    def __init__(self, cell: Cell, data: Dataset, model: Network, extra: list[nn.Parameter]):
        self.cell, self.data, self.model, self.extra = cell, data, model, extra

    @property
    def total_steps(self) -> int:
        """Updates over all stages (the progress line's total)."""
        return self.cell.run.steps

    def stage(self, index: int) -> Stage:
        raise NotImplementedError

    def end_stage(self, stage: Stage, test_acc: float, test_loss: float) -> None:
        """The stage's last test evaluation (before its head would be discarded)."""

    def after_stage(self, stage: Stage) -> None:
        """The stage has trained to its end without diverging (its parameters are frozen again)."""

    def step_loss(self, stage: Stage) -> LossFn:
        """The loss of one step of the stage's network (or of a copy of it), as training computes it."""
        return ce_step_loss

    def step_optimizer(self, stage: Stage) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
        """An optimizer of the stage's kind for other parameters (a copy of the stage's network)."""
        return partial(make_optimizer, self.cell.optimizer)

    def resident(self, stage: Stage) -> dict[str, int]:
        """Bytes per memory part (`layerlab.training.memory.PARTS`) the regime keeps beside the stage's network and
        its step (round robin: the other layers' training states)."""
        return {}

    def variables(self, run: Run) -> xr.Dataset | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
