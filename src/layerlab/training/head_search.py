"""The memory-targeted search of the staged regimes' decision heads (paper 001 ch. 6, Table 6.3) and the memory
profile of a staged cell without training (the seed notes' E6b).

With `memory_target` a staged regime fits every stage's head before training (`fit_heads`, the thesis's search,
whose procedure it does not give): per stage, among the head's `search_space` (decision blocks: 0..decision_convs
down-convs of 1..decision_channels channels), the one whose tracked memory of one step (`step_memory`'s accounting,
on the cell's first batch, extrapolated from two small dry steps, no training) is the closest to memory_target x
backprop's, of those at most memory_tolerance above it (found by bisection along each family of the space); where
none is, the smallest (the target is then missed, and the achieved relative memory says by how much). The last
stage keeps the model's output layer. Deterministic: shapes only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import torch

from layerlab.core.cell import Cell
from layerlab.core.params import Section
from layerlab.core.registry import DECISION_HEADS, resolve
from layerlab.nets.layers import LayerStack
from layerlab.training.memory import StepMemory, ce_step_loss, extrapolated_step_memory, step_memory
from layerlab.training.optim import make_optimizer
from layerlab.training.regimes.stage_nets import (
    StageNet,
    frozen,
    noisy_step_loss,
    stage_network,
    stage_schedule,
    stage_windows,
    window_shape,
)


def window_memory(cell: Cell, stage: StageNet, i: int, x: torch.Tensor, y: torch.Tensor,
                  measure: Callable[..., StepMemory] = step_memory) -> StepMemory:
    """Memory of one training step of stage i (its dropouts and optimizer included)."""
    optimizer = stage_schedule(cell.optimizer, cell.regime, i)
    return measure(stage, noisy_step_loss(cell.regime, x.device), partial(make_optimizer, optimizer), x, y)


def with_head(cell: Cell, head: Section | None) -> Cell:
    """The cell with a chosen configuration of its decision head (None: as it is)."""
    return cell.replace(head) if head else cell


def measure_stage(cell: Cell, model: LayerStack, i: int, window: tuple[int, int], last: bool, n_classes: int,
                  x: torch.Tensor, y: torch.Tensor, measure: Callable[..., StepMemory] = step_memory) -> StepMemory:
    """Memory of one step of stage i's network (call with `model` frozen)."""
    stage = stage_network(cell, model, i, window, last, n_classes, x)
    memory = window_memory(cell, stage, i, x, y, measure)
    stage.requires_grad_(False)
    return memory


def memory_profile(cell: Cell, model: LayerStack, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                   heads: list[Section | None] | None = None) -> tuple[StepMemory, list[StepMemory]]:
    """(backprop step, every stage's step) of the cell's regime on the batch (x, y), without training: the
    seed notes' E6b (relative memory from random tensors); `heads`: per stage, the configuration of its head (as
    `fit_heads` chooses). `model` is left as it was."""
    backprop = step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y)
    stages = stage_windows(cell.regime, len(model.layers))
    heads = heads or [None] * len(stages)
    with frozen(model):
        memories = [measure_stage(with_head(cell, head), model, i, window, i == len(stages) - 1, n_classes, x, y)
                    for i, (window, head) in enumerate(zip(stages, heads, strict=True))]
    return backprop, memories


@dataclass(frozen=True)
class HeadFit:
    """The memory search's result: per stage the chosen configuration of the head (its section; None for the last
    stage, the model's own output layer) and the tracked memory of one step with it; the backprop step's memory."""

    heads: list[Section | None]
    memories: list[StepMemory]
    backprop: StepMemory

    @property
    def relative_memory(self) -> float:
        return max(m.total for m in self.memories) / self.backprop.total


def last_within(n: int, cost: Callable[[int], int], budget: float) -> int | None:
    """The largest j < n with cost(j) <= budget, for cost non-decreasing in j (bisection); None if cost(0) is over."""
    if cost(0) > budget:
        return None
    low, high = 0, n - 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= budget else (low, mid - 1)
    return low


def fit_stage(cell: Cell, model: LayerStack, i: int, window: tuple[int, int], last: bool, n_classes: int,
              x: torch.Tensor, y: torch.Tensor, families: list[list[Section | None]], target: float,
              tolerance: float) -> tuple[Section | None, StepMemory]:
    """Stage i's head among `families` and its memory: of the configurations within `target + tolerance` bytes the
    one closest to `target` (per family: the last within the target and the one after it), else the smallest
    first one of a family; ties: the first family."""

    @cache
    def memory(f: int, j: int) -> StepMemory:
        return measure_stage(with_head(cell, families[f][j]), model, i, window, last, n_classes, x, y,
                             extrapolated_step_memory)

    def total(f: int, j: int) -> int:
        return memory(f, j).total

    found = []
    for f, family in enumerate(families):
        j = last_within(len(family), partial(total, f), target)
        found += [(f, k) for k in ([0] if j is None else [j, j + 1])
                  if k < len(family) and memory(f, k).total <= target + tolerance]
    f, j = (min(found, key=lambda fj: abs(memory(*fj).total - target)) if found
            else min(((f, 0) for f in range(len(families))), key=lambda fj: memory(*fj).total))
    return families[f][j], memory(f, j)


def fit_heads(cell: Cell, model: LayerStack, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> HeadFit:
    """Per stage, the configuration of the cell's head whose tracked step memory on the batch (x, y) is the closest
    to memory_target x backprop's within memory_tolerance above it, else the smallest (module docstring). `model`
    is left as it was."""
    regime, spec = cell.regime, DECISION_HEADS[cell.regime.layer_head]
    search_space = resolve(spec.search_space)
    params = cell[spec.parameters] if spec.parameters else None
    backprop = extrapolated_step_memory(model, ce_step_loss, partial(make_optimizer, cell.optimizer), x, y)
    assert regime.memory_target is not None  # a search only with a target
    target, tolerance = regime.memory_target * backprop.total, regime.memory_tolerance * backprop.total
    stages = stage_windows(regime, len(model.layers))
    heads: list[Section | None] = []
    memories = []
    with frozen(model):
        for i, window in enumerate(stages):
            last = i == len(stages) - 1
            families: list[list[Section | None]] = ([[None]] if last else
                                                     search_space(params, window_shape(model, window[1], x)))
            head, memory = fit_stage(cell, model, i, window, last, n_classes, x, y, families, target, tolerance)
            heads.append(head)
            memories.append(memory)
    return HeadFit(heads, memories, backprop)


