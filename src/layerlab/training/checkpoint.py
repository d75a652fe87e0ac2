"""Checkpoints of a training cell that survive kills, cluster time limits and preemption.

A checkpoint lives outside Snakemake's outputs (results/<study>/checkpoints/<cell>/checkpoint.pt), so a failed job
does not delete it. It is written atomically (temporary file, then rename) at a step boundary, every `every` steps
and/or every `minutes` of training, and when the job receives SIGTERM or SIGINT (what SLURM sends at a time limit
or on preemption): then the job saves and exits non-zero, and its retry resumes. It holds everything a bit-identical
continuation needs (`layerlab.training.loop.Loop.state`): weights, optimizer and LR schedule, every RNG stream, LBE's
alpha, the regime's stage and position, each probe's records, the metrics logged so far. It is tagged with a hash of the
cell's canonical JSON and the layerlab version: a checkpoint of another cell or version, or an unreadable one, is
reported in the job's log, removed, and training starts fresh.

When training ends, the finished result (the metrics Dataset and the final weights) is saved before any output is
written: a failed write loses no training, and the rerun finds the result and only writes. A checkpoint that cannot
be written (a full disk) is a warning naming the path and the free space; training goes on. A probe whose state
cannot be saved turns checkpoints off for its cell, with a warning: a stopped run then starts over.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import signal
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import xarray as xr
from torch import nn

from layerlab import __version__
from layerlab.core.cell import Cell
from layerlab.core.disk import WriteFailed, writing

log = logging.getLogger("layerlab.training.checkpoint")


class Interrupted(Exception):
    """The job was asked to stop (SIGTERM/SIGINT); its checkpoint is saved."""


def catch_signals(checkpoints: list[Checkpoint]) -> None:
    """SIGTERM and SIGINT: every checkpoint saves at the next step boundary, then the run raises Interrupted."""

    def request_stop(signum: int, frame) -> None:
        log.info("received %s: checkpoint at the next step, then stop", signal.Signals(signum).name)
        for checkpoint in checkpoints:
            checkpoint.stop = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)


def own_storage(value):
    """`value` (a state: tensors in dicts and lists) with every tensor that is a view into a larger storage copied:
    a packed cell's weights and optimizer state are views of its pack's fused tensors, and `torch.save` of a view
    writes the whole storage behind it."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.untyped_storage().nbytes() > value.nbytes else value
    if isinstance(value, dict):
        return {k: own_storage(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(own_storage(v) for v in value)
    return value


def cell_tag(cell: Cell) -> str:
    return f"{hashlib.sha256(cell.json.encode()).hexdigest()[:16]}/layerlab-{__version__}"


class Checkpoint:
    """Where and when one cell's training state is saved, and the signals that make it save and stop."""

    def __init__(self, directory: str | os.PathLike, cell: Cell, every: int = 0, minutes: float = 0.0):
        self.path = Path(directory) / "checkpoint.pt"
        self.tag, self.every, self.seconds = cell_tag(cell), every, minutes * 60
        self.last = time.monotonic()
        self.stop: int | None = None  # the signal received
        self.off: str | None = None  # why this cell is not checkpointed
        self.kept = "no checkpoint"  # where the finished result is kept, or why it is not (save_result)

    def check_probes(self, probes: Iterable[tuple[str, object]]) -> None:
        """Turn checkpoints off, with a warning in the log, if a probe's state (`state_dict`) cannot be saved."""
        for name, probe in probes:
            for attribute, value in probe.state_dict().items():  # type: ignore[attr-defined]
                try:
                    pickle.dumps(value)
                except Exception as err:  # whatever pickling raises: a lambda, an open file, a lock
                    self.off = (f"training probe '{name}' keeps {attribute!r} ({type(value).__name__}), which a "
                                f"checkpoint cannot save ({type(err).__name__}: {err})")
                    log.warning("no checkpoints for this cell: %s; a stopped run starts over (keep it out of the "
                                "probe's state_dict, or override state_dict/load_state_dict)", self.off)
                    return

    def due(self, step: int) -> bool:
        return (self.stop is not None or (self.every > 0 and step % self.every == 0)
                or (self.seconds > 0 and time.monotonic() - self.last >= self.seconds))

    def save(self, state: dict) -> None:
        """Save the training state at a step boundary (a failed write is a warning: training goes on); when a signal
        asked to stop, raise Interrupted."""
        failed = self.off or self._write(state)
        if self.stop is not None:
            kept = f"no checkpoint ({failed}): a rerun starts over" if failed else f"rerun to resume from {self.path}"
            raise Interrupted(f"stopped by {signal.Signals(self.stop).name} at step {state['step']}; {kept}")

    def save_result(self, ds: xr.Dataset, model: nn.Module) -> None:
        """The finished training (metrics and final weights), before any output is written: a failed write of the
        outputs then loses nothing, and the rerun only writes."""
        failed = self._write({"step": int(ds["step"][-1]), "result": {"dataset": ds, "model": model.state_dict()}})
        self.kept = (f"the trained cell could not be kept either ({failed})" if failed else
                     f"the trained cell is kept in {self.path}: free space, then rerun (it only writes the outputs)")

    def _write(self, state: dict) -> str | None:
        """Write atomically; a failed write is a warning naming the path and the free space, and its message."""
        tic = time.perf_counter()
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"tag": self.tag, **own_storage(state)}, tmp)
        except WriteFailed as err:
            tmp.unlink(missing_ok=True)
            log.warning("no checkpoint at step %d: %s", state["step"], err)
            return str(err)
        os.replace(tmp, self.path)
        self.last = time.monotonic()
        log.info("checkpoint at step %d (%.1f MB, %.0f ms)", state["step"], self.path.stat().st_size / 1e6,
                 1e3 * (time.perf_counter() - tic))
        return None

    def load(self) -> dict | None:
        """The saved state of this cell, or None (a stale or unreadable checkpoint is reported and removed); a
        finished result holds `result` ({dataset, model})."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            reason = None if state.get("tag") == self.tag else f"it belongs to {state.get('tag')}, not {self.tag}"
        except Exception as err:  # truncated or corrupt: any unpickling error
            state, reason = None, f"it cannot be read ({type(err).__name__}: {err})"
        if reason:
            log.info("checkpoint %s removed, training starts fresh: %s", self.path, reason)
            self.remove()
            return None
        if "result" in state:
            log.info("training finished at step %d (%s): only the outputs are written", state["step"], self.path)
        else:
            log.info("resumed from step %d (%s)", state["step"], self.path)
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.path.parent.exists() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()
