"""The one training loop of every cell: a regime supplies the stages, the registered probes measure.

Each stage runs `stage.steps` updates on mini-batches drawn from tensors on the device (seeded permutation per
epoch, last partial batch dropped; `augment` applied per batch; with `k_filter` the permutation runs over the rows
k-filtering keeps, `layerlab.training.kfilter`). At every `log_every` steps (and the last) the
loop records the loss terms, LBE's alpha and the progress log line; every `eval_every` steps (and the last) the
test accuracy. Probes (`layerlab.probes.base`) run at their hooks. A non-finite loss ends the run early and marks
the cell `diverged`: a result, not a crash; so does a non-finite final training or test loss.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.catalog.checks import active_probes
from layerlab.catalog.regimes import RUN_VARIABLES
from layerlab.core.cell import Cell
from layerlab.core.registry import PROBES, REGIMES, resolve
from layerlab.core.store import describe
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.training.augment import crop_flip
from layerlab.training.checkpoint import Checkpoint
from layerlab.training.kfilter import kept_rows
from layerlab.training.losses import Objective
from layerlab.training.optim import Batches, evaluate, logged_steps
from layerlab.training.progress import Progress, ProgressWriter, finished
from layerlab.training.records import Run
from layerlab.training.regime import Regime
from layerlab.training.stage import Stage, StepHooks, StepState

log = logging.getLogger("layerlab.training.loop")


class Loop:
    """The loop's state for one cell: objective, regime, probes, batch stream, records. `name` (the cell's id in a
    pack) prefixes its progress lines; `writers` show its progress elsewhere (`layerlab.training.progress`)."""

    def __init__(self, cell: Cell, data: Dataset, model: Network, name: str = "",
                 writers: tuple[ProgressWriter, ...] = ()):
        self.cell, self.data, self.model = cell, data, model
        self.objective = Objective(cell.loss, len(model.layers)).to(data.train.x.device)
        spec = REGIMES[cell.regime.training]
        self.regime: Regime = resolve(spec.impl)(cell, data, model, list(self.objective.parameters()), **spec.options)
        self.names = active_probes(cell)
        self.probes: list[StepHooks] = [resolve(PROBES[name].impl)(cell, model, data) for name in self.names]
        self.rows, self.filter_seconds = training_rows(cell, data)
        self.stream = Batches(len(data.train.y) if self.rows is None else len(self.rows), cell.run.batch_size,
                              torch.Generator().manual_seed(cell.run.seed))
        self.augment = torch.Generator().manual_seed(cell.run.seed) if cell.run.augment == "crop_flip" else None
        self.run, self.diverged_step, self.seconds_before = Run(), -1, 0.0
        self.progress = Progress(self.regime.total_steps, name, writers)
        self.to_log: set[int] = set()
        self.to_eval: set[int] = set()
        self.start = time.perf_counter()

    @property
    def batch_rows(self) -> int:
        """Rows of every training batch (before a stage's selection)."""
        return self.stream.batch_size

    def hooks(self, name: str, *args) -> None:
        for probe in self.probes:
            getattr(probe, name)(*args)

    def begin_stage(self, stage: Stage) -> None:
        """The stage's network in training mode, its logged and evaluated steps, the probes' start_stage."""
        stage.net.train()
        self.to_log = logged_steps(stage.steps, self.cell.run.log_every)
        self.to_eval = logged_steps(stage.steps, self.cell.run.eval_every)
        self.hooks("start_stage", stage)

    def run_stage(self, stage: Stage, start: int = 0, checkpoint: Checkpoint | None = None) -> bool:
        """Train one stage from its step `start`, then finish it; True if it diverged. At each step boundary the
        checkpoint saves the state when due (and stops the run when a signal asked it to)."""
        self.begin_stage(stage)
        for t in range(start, stage.steps):
            if checkpoint is not None and t > start and checkpoint.due(stage.offset + t):
                checkpoint.save(self.state(stage, t))
            state = self.forward(stage, t)
            if self.observe(stage, state):
                return True
            self.update(stage, state)
        return self.finish_stage(stage)

    def observe(self, stage: Stage, state: StepState) -> bool:
        """After a training step's forward pass: the test evaluation when due, the progress line; True (and the cell
        marked diverged) after a non-finite loss."""
        t = state.t
        if (t in self.to_eval and (t > 0 or stage.first)) or not state.finite:
            self.run.evaluate(stage.net, state.step, self.data.test)
        return self.end_step(stage, state)

    def finish_stage(self, stage: Stage) -> bool:
        """The stage's step t = `steps` (no update): a stage whose head is discarded reports its test result; the
        last stage does a final forward pass and `conclude`s. True if that pass diverged."""
        if not stage.last:
            self.regime.end_stage(stage, *self.run.evaluate(stage.net, stage.offset + stage.steps, self.data.test))
            return False
        return self.conclude(stage, self.forward(stage, stage.steps))

    def conclude(self, stage: Stage, state: StepState) -> bool:
        """After the last stage's final forward pass: the final network's evaluation; True if that pass diverged."""
        test = self.run.evaluate(final_net(stage), state.step, self.data.test)
        self.regime.end_stage(stage, *(test if stage.final is None else evaluate(stage.net, self.data.test)))
        return self.end_step(stage, state)

    def end_step(self, stage: Stage, state: StepState) -> bool:
        """The progress line of a logged step; True (and the cell marked diverged) after a non-finite loss."""
        if state.logged:
            self.progress(state.step, stage.index if stage.top is not None else None, self)
        if not state.finite:
            self.diverged_step = state.step
            log.info("%sdiverged: non-finite loss at step %d", self.progress.prefix, state.step)
        return not state.finite

    def forward(self, stage: Stage, t: int) -> StepState:
        """The step's batch, forward pass and loss; the logged records and the probes' after_forward."""
        x, y = self.batch(stage, t)
        logits, hidden = stage.forward(x, t)
        return self.record(stage, t, x, y, logits, hidden)

    def batch(self, stage: Stage, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step t's training batch: the stream's next rows (of the kept rows under k-filtering), augmented, the
        stage's selection of them."""
        idx = next(self.stream).to(self.data.train.x.device)
        if self.rows is not None:  # k-filtering: batches of the kept rows
            idx = self.rows[idx]
        x, y = self.data.train.x[idx], self.data.train.y[idx]
        if self.augment is not None:
            x = crop_flip(x, self.augment)
        if stage.select is not None:
            keep = stage.select(idx, x, y, t)
            x, y = x[keep], y[keep]
        return x, y

    def record(self, stage: Stage, t: int, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
               hidden: list[torch.Tensor]) -> StepState:
        """The step's loss from the stage's outputs; the logged records and the probes' after_forward."""
        loss, ce, lbe = self.objective(logits, y, hidden)
        finite = bool(torch.isfinite(loss))
        state = StepState(stage.offset + t, t, stage, self.model, x, y, logits, hidden, loss,
                          t in self.to_log or not finite, finite)
        if state.logged:
            run = self.run
            run.steps.append(state.step)
            run.stages.append(stage.index)
            run.add(run.scalars, loss=loss, ce=ce, lbe=lbe, batch_acc=(logits.argmax(1) == y).float().mean())
            run.alpha.append(self.objective.alpha())
        self.hooks("after_forward", state)
        return state

    def update(self, stage: Stage, state: StepState) -> None:
        stage.optimizer.zero_grad(set_to_none=True)
        state.loss.backward()
        self.hooks("after_backward", state)
        stage.optimizer.step()
        self.hooks("after_update", state)
        stage.schedule.step()

    def state(self, stage: Stage, t: int) -> dict:
        """Everything a bit-identical continuation from step t of `stage` needs (layerlab.training.checkpoint)."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return {"step": stage.offset + t, "stage": stage.index, "t": t, "model": self.model.state_dict(),
                "net": None if stage.net is self.model else stage.net.state_dict(),
                "objective": self.objective.state_dict(), "optimizer": stage.optimizer.state_dict(),
                "schedule": stage.schedule.state_dict(), "stream": self.stream.state_dict(),
                "augment": None if self.augment is None else self.augment.get_state(),
                "rng": torch.get_rng_state(), "cuda_rng": cuda, "run": dataclasses.asdict(self.run),
                "regime": self.regime.state_dict(), "probes": [probe.state_dict() for probe in self.probes],
                "seconds": self.seconds_before + time.perf_counter() - self.start}

    def restore(self, stage: Stage, state: dict) -> int:
        """Load a checkpoint's state taken in `stage` (built after the regime's state was loaded); returns the step
        within the stage to continue from."""
        self.model.load_state_dict(state["model"])
        if state["net"] is not None:
            stage.net.load_state_dict(state["net"])
        self.objective.load_state_dict(state["objective"])
        stage.optimizer.load_state_dict(state["optimizer"])
        stage.schedule.load_state_dict(state["schedule"])
        self.stream.load_state_dict(state["stream"])
        if self.augment is not None:
            self.augment.set_state(state["augment"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.run = Run(**state["run"])
        for probe, probe_state in zip(self.probes, state["probes"], strict=True):
            probe.load_state_dict(probe_state)
        self.seconds_before, self.start = state["seconds"], time.perf_counter()
        self.progress.resumed(state["step"], state["seconds"])
        return state["t"]

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def result(self, stage: Stage, seconds: float | None = None) -> tuple[xr.Dataset, Network]:
        """After the last stage `stage`: the cell's metrics Dataset and its trained network. `seconds`: the training
        time since the loop started or resumed, where it is not this loop's own (a cell's share of its pack's)."""
        seconds = self.seconds() if seconds is None else self.seconds_before + seconds
        train_acc, train_loss = evaluate(final_net(stage), self.data.train)
        self.model.requires_grad_(True)
        self.objective.requires_grad_(True)
        ds = self.dataset(train_acc, train_loss, seconds)
        self.progress.finished(ds)
        return ds, self.model

    def dataset(self, train_acc: float, train_loss: float, seconds: float) -> xr.Dataset:
        """The run's, the regime's and every probe's variables, described by their declarations."""
        n = len(self.data.train.y)
        rows = n if self.rows is None else len(self.rows)
        kept = xr.Dataset({"train_rows": rows, "train_kept": rows / n, "k_filter_seconds": self.filter_seconds})
        parts = [run_dataset(self.run, self.diverged_step, train_acc, train_loss, seconds), kept,
                 self.regime.variables(self.run), *(probe.variables(self.run.steps) for probe in self.probes)]
        ds = xr.merge([p for p in parts if p is not None], join="outer", compat="no_conflicts",
                      combine_attrs="override")
        for name in self.names:
            describe(ds, PROBES[name].variables)
        return describe(describe(ds, RUN_VARIABLES), REGIMES[self.cell.regime.training].variables)


def training_rows(cell: Cell, data: Dataset) -> tuple[torch.Tensor | None, float]:
    """The training rows the batches are drawn from (None: all) and the seconds k-filtering took."""
    if not cell.run.k_filter or REGIMES[cell.regime.training].k_filter != "before":  # "online": the regime filters
        return None, 0.0
    start = time.perf_counter()
    rows = kept_rows(data.train.x, data.train.y, cell.run.k_filter, cell.run.k_filter_batch)
    log.info("k-filter (k %d, batches of %s rows): %d of %d training rows kept", cell.run.k_filter,
             cell.run.k_filter_batch or "all", len(rows), len(data.train.y))
    return rows, time.perf_counter() - start


def train_cell(cell: Cell, data: Dataset, model: Network, device: torch.device,
               checkpoint: Checkpoint | None = None,
               writers: tuple[ProgressWriter, ...] = ()) -> tuple[xr.Dataset, Network]:
    """Train `model` as `cell` says (resuming from `checkpoint` when it holds this cell's state, or returning the
    finished result it holds), its progress shown by `writers`; return the per-cell metrics Dataset and the trained
    model, saved in the checkpoint first (the outputs written after it may fail)."""
    model = model.to(device)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None and "result" in saved:
        model.load_state_dict(saved["result"]["model"])
        return finished(saved["result"]["dataset"], writers), model
    loop = Loop(cell, data, model, writers=writers)
    regime = loop.regime
    if checkpoint is not None:
        checkpoint.check_probes(zip(loop.names, loop.probes, strict=True))
    if saved is not None:  # what the regime keeps between stages, before it builds the stage to resume in
        regime.load_state_dict(saved["regime"])
    for index in range(0 if saved is None else saved["stage"], regime.n_stages):
        stage = regime.stage(index)
        start, saved = (0 if saved is None else loop.restore(stage, saved)), None
        diverged = loop.run_stage(stage, start, checkpoint)
        for p in stage.trainable:
            p.requires_grad_(False)
        if diverged:
            break
        regime.after_stage(stage)
    ds, model = loop.result(stage)
    if checkpoint is not None:
        checkpoint.save_result(ds, model)
    return ds, model


def final_net(stage: Stage) -> nn.Module:
    """The network the final metrics describe: the last stage's `final` (round robin whose last stage trains a
    lower layer: the whole network), else the network it trains."""
    return stage.net if stage.final is None else stage.final


def run_dataset(run: Run, diverged_step: int, train_acc: float, train_loss: float, seconds: float) -> xr.Dataset:
    """What every training run stores: per-step scalars and alpha, evaluation curves and the final metrics. A final
    network whose training or test loss is not finite diverged too (at the last step), though no batch loss was."""
    test_acc = run.evals["test_acc"][-1]
    if diverged_step < 0 and not np.isfinite([train_loss, run.evals["test_loss"][-1]]).all():
        diverged_step = run.steps[-1]
        log.info("diverged: non-finite final loss (train %s, test %s)", train_loss, run.evals["test_loss"][-1])
    alpha = np.stack(run.alpha)
    return xr.Dataset({
        **{k: ("step", np.asarray(v, dtype=np.float32)) for k, v in run.scalars.items()},
        "alpha": (("step", "layer"), alpha),
        **{f"{k}_curve": ("eval_step", np.asarray(v, dtype=np.float32)) for k, v in run.evals.items()},
        "test_acc": test_acc,
        "test_error": 1 - test_acc,
        "test_loss": run.evals["test_loss"][-1],
        "test_acc_last3": float(np.mean(run.evals["test_acc"][-3:])),
        "train_acc": train_acc,
        "train_loss": train_loss,
        "diverged": diverged_step >= 0,
        "diverged_step": diverged_step,
        "train_seconds": seconds,
    }, coords={"step": np.asarray(run.steps), "eval_step": np.asarray(run.eval_steps),
               "layer": np.arange(alpha.shape[1])})
