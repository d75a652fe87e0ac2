"""Checkpoints of a training cell that survive kills, cluster time limits and preemption.

A checkpoint lives outside Snakemake's outputs (results/<study>/checkpoints/<cell>/checkpoint.pt), so a failed job
does not delete it. It is written atomically (temporary file, then rename) at a step boundary, every `every` steps
and/or every `minutes` of training, and when the job receives SIGTERM or SIGINT (what SLURM sends at a time limit
or on preemption): then the job saves and exits non-zero, and its retry resumes. It holds everything a bit-identical
continuation needs (`layerlab.training.loop.Loop.state`): weights, optimizer and LR schedule, every RNG stream, LBE's
alpha, the regime's stage and position, each probe's records, the metrics logged so far. It is tagged with a hash of the
cell's canonical JSON and the layerlab version: a checkpoint of another cell or version, or an unreadable one, is
reported in the job's log, removed, and training starts fresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from pathlib import Path

import torch

from layerlab import __version__
from layerlab.core.config import canonical_json

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


def cell_tag(cell: dict) -> str:
    return f"{hashlib.sha256(canonical_json(cell).encode()).hexdigest()[:16]}/layerlab-{__version__}"


class Checkpoint:
    """Where and when one cell's training state is saved, and the signals that make it save and stop."""

    def __init__(self, directory: str | os.PathLike, cell: dict, every: int = 0, minutes: float = 0.0):
        self.path = Path(directory) / "checkpoint.pt"
        self.tag, self.every, self.seconds = cell_tag(cell), every, minutes * 60
        self.last = time.monotonic()
        self.stop: int | None = None  # the signal received

    def due(self, step: int) -> bool:
        return (self.stop is not None or (self.every > 0 and step % self.every == 0)
                or (self.seconds > 0 and time.monotonic() - self.last >= self.seconds))

    def save(self, state: dict) -> None:
        tic = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        torch.save({"tag": self.tag, **state}, tmp)
        os.replace(tmp, self.path)
        self.last = time.monotonic()
        log.info("checkpoint at step %d (%.1f MB, %.0f ms)", state["step"], self.path.stat().st_size / 1e6,
                 1e3 * (time.perf_counter() - tic))
        if self.stop is not None:
            raise Interrupted(f"stopped by {signal.Signals(self.stop).name} at step {state['step']}; "
                              f"rerun to resume from {self.path}")

    def load(self) -> dict | None:
        """The saved state of this cell, or None (a stale or unreadable checkpoint is reported and removed)."""
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
        log.info("resumed from step %d (%s)", state["step"], self.path)
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.path.parent.exists() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()
