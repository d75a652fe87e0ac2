"""A cell's progress at its logged steps: the log line, and the writers that show it elsewhere while it trains (the
workflow's progress file, console line and TensorBoard run: `layerlab.workflow.watch`, `layerlab.workflow.tensorboard`).

Each training loop (one per cell, also where one process trains several cells) has its own `Progress`, so every cell
reports its own steps. The rate is measured in this process from its first logged step; a resumed run starts from the
rate of the jobs before it (the steps and training seconds its checkpoint recorded), so its first line has a rate and
an ETA.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import xarray as xr

from layerlab.core.messages import duration

if TYPE_CHECKING:
    from layerlab.training.loop import Loop

log = logging.getLogger("layerlab.training.loop")


@dataclass(frozen=True)
class Tick:
    """One logged step as the progress writers see it."""

    step: int
    total: int  # updates over all stages
    stage: int | None  # staged regimes: the stage trained at this step
    loss: float
    test_acc: float  # the last evaluation's test accuracy ...
    test_step: int  # ... and the step it was measured at
    rate: float  # steps/s (NaN: not known yet)
    seconds: float  # training seconds of the cell so far, over every job that trained it

    @property
    def eta(self) -> float:
        """Seconds until the last step at the current rate (NaN: not known)."""
        return (self.total - self.step) / self.rate if self.rate > 0 else math.nan

    def line(self) -> str:
        stage = f" stage {self.stage}" if self.stage is not None else ""
        rate = f"{self.rate:.3g}" if math.isfinite(self.rate) else "?"
        return (f"step {self.step}/{self.total}{stage} loss {self.loss:.4g} test_acc {self.test_acc:.4f} "
                f"(step {self.test_step})  {rate} steps/s  ETA {duration(self.eta)}")


class ProgressWriter(Protocol):
    """Shows a cell's progress somewhere: at each logged step (`logged`), and once its metrics are final."""

    def logged(self, tick: Tick, loop: Loop) -> None: ...

    def finished(self, ds: xr.Dataset) -> None: ...


class Progress:
    """One log line per logged step (step, loss, last test accuracy and its step, speed, time left), prefixed with
    `name` (a cell's id in a pack), passed on to the writers."""

    def __init__(self, total: int, name: str = "", writers: tuple[ProgressWriter, ...] = ()):
        self.total, self.writers, self.prefix = max(total, 1), writers, f"{name}: " if name else ""
        self.start, self.prior_rate = time.perf_counter(), math.nan
        self.first: int | None = None  # the first step this job logged

    def resumed(self, step: int, seconds: float) -> None:
        """A checkpoint restored `step` steps trained in `seconds`: their rate stands until this job measures its
        own."""
        self.prior_rate = step / seconds if step > 0 and seconds > 0 else math.nan
        self.start = time.perf_counter()

    def rate(self, step: int) -> float:
        first = self.first = step if self.first is None else self.first
        elapsed = time.perf_counter() - self.start
        return (step - first) / elapsed if step > first and elapsed > 0 else self.prior_rate

    def __call__(self, step: int, stage_index: int | None, loop: Loop) -> None:
        run = loop.run
        test_acc, test_step = (run.evals["test_acc"][-1], run.eval_steps[-1]) if run.evals else (math.nan, -1)
        tick = Tick(step, self.total, stage_index, run.scalars["loss"][-1], test_acc, test_step, self.rate(step),
                    loop.seconds())
        log.info("%s%s", self.prefix, tick.line())
        for writer in self.writers:
            writer.logged(tick, loop)

    def finished(self, ds: xr.Dataset) -> None:
        finished(ds, self.writers)


def finished(ds: xr.Dataset, writers: tuple[ProgressWriter, ...]) -> xr.Dataset:
    """Show the writers a cell's final metrics (also those of a result its checkpoint kept); returns them."""
    for writer in writers:
        writer.finished(ds)
    return ds
