"""One stage of a training regime, and what a probe sees of one training step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import xarray as xr
from torch import nn

from layerlab.nets.layers import Network

if TYPE_CHECKING:
    from layerlab.training.regime import Regime

Select = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
# (training-row indices, x, y, step t in the stage) of a batch -> the positions in the batch to train on


@dataclass(kw_only=True)
class Stage:
    """One stage of a training regime: the network it trains, its parameters, optimizer and steps."""

    regime: Regime  # the regime that made it (its step's loss, optimizer kind and resident memory)
    index: int
    offset: int  # global step of the stage's step 0
    steps: int  # updates in this stage
    last: bool  # the run's last stage: its end is the final evaluation
    net: nn.Module  # (x) -> (logits, hidden): what the stage evaluates
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    forward: Callable[[torch.Tensor, int], tuple[torch.Tensor, list[torch.Tensor]]]  # (x, t) with the stage's noise
    top: int | None = None  # staged regimes: the layer whose results this stage reports
    final: nn.Module | None = None  # the last stage: the network its final evaluation reports (None: `net`)
    select: Select | None = None  # the examples of each batch the stage trains on (filtering); None: all

    @property
    def first(self) -> bool:
        return self.index == 0


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


class StepHooks(Protocol):
    """What the loop calls on a training probe (`layerlab.probes.base.TrainingProbe` implements it)."""

    def start_stage(self, stage: Stage) -> None: ...

    def after_forward(self, state: StepState) -> None: ...

    def after_backward(self, state: StepState) -> None: ...

    def after_update(self, state: StepState) -> None: ...

    def variables(self, steps: list[int]) -> xr.Dataset | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
