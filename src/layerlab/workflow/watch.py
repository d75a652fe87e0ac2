"""How a training job shows its cell while it trains (the writers of `layerlab.training.progress`): a progress record
that `python -m layerlab.status` reads, a throttled progress line on the console, and, with the study's
`tensorboard: true`, a live TensorBoard run (`layerlab.workflow.tensorboard`). Torch-free: status reads the records
with the functions here.

The record, results/<study>/progress/<cell>.json, is rewritten atomically (temporary file, then rename) when the job
starts and at every logged step, so a reader on any machine of a shared file system sees a whole one. It names the job
(host, pid), its log and where this job's lines begin in it, and the last tick: step, total, loss, test accuracy and
its step, steps/s, ETA.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from layerlab.workflow.paths import CellFiles, study_dir

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import xarray as xr

    from layerlab.training.loop import Loop
    from layerlab.training.progress import ProgressWriter, Tick

QUIET_SECONDS = 300  # a job on another machine whose record is older than this (and 3 of its intervals) looks silent


def _finite(value: Any) -> Any:
    """NaN and inf as null: the record is plain JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(path: Path, record: dict) -> None:
    """Write `record` whole or not at all (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps({k: _finite(v) for k, v in record.items()}))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class ProgressFile:
    """A cell's progress record, rewritten at its job's start and at every logged step."""

    def __init__(self, path: Path, cell: str, log: Path):
        self.path, self.last, self.unwritten = path, time.time(), False
        self.tick: dict[str, Any] = {}
        self.job = {"cell": cell, "host": socket.gethostname(), "pid": os.getpid(), "started": self.last,
                    "log": str(log), "log_offset": log.stat().st_size if log.exists() else 0}
        self.write("starting")

    def write(self, state: str, **fields: Any) -> None:
        now = time.time()
        try:
            write_json(self.path, {**self.job, "state": state, **self.tick, **fields, "updated": now,
                                   "interval": now - self.last})
        except OSError as err:  # the record only informs status: a full disk must not end the training
            if not self.unwritten:
                logger.warning(f"progress record {self.path} not written ({err.strerror or err}); training goes on")
            self.unwritten = True
        self.last = now

    def logged(self, tick: Tick, loop: Loop) -> None:
        self.tick = {**asdict(tick), "eta": tick.eta}
        self.write("running")

    def finished(self, ds: xr.Dataset) -> None:
        self.write("finished", test_acc=float(ds["test_acc"]), test_step=int(ds["eval_step"][-1]),
                   seconds=float(ds["train_seconds"]), diverged=bool(ds["diverged"]), eta=0.0)


class Console:
    """The progress line on the job's stderr (the console of a local run, the job's output file on a cluster), each
    prefixed with the cell: at the first logged step, then at most every `every` seconds, and at the last step."""

    def __init__(self, cell: str, every: float, stream: TextIO | None = None):
        self.cell, self.every, self.stream, self.last = cell, every, stream, -math.inf

    def logged(self, tick: Tick, loop: Loop) -> None:
        now = time.monotonic()
        if now - self.last >= self.every or tick.step >= tick.total or not math.isfinite(tick.loss):
            print(f"{self.cell}: {tick.line()}", file=self.stream or sys.stderr, flush=True)
            self.last = now

    def finished(self, ds: xr.Dataset) -> None:
        pass


def cell_writers(config: dict, cell: str, log: Path) -> tuple[ProgressWriter, ...]:
    """The writers of one cell trained with the study `config` (validated: defaults filled), its job logging to
    `log`."""
    files = CellFiles(study_dir(config["study"]), cell)
    writers: list[ProgressWriter] = [ProgressFile(files.progress, cell, log), Console(cell, config["progress_seconds"])]
    if config["tensorboard"]:
        from layerlab.workflow.tensorboard import LiveBoard

        writers.append(LiveBoard.for_cell(config, cell, files.tensorboard))
    return tuple(writers)


def job_writers(snakemake) -> tuple[ProgressWriter, ...]:
    """The writers of a training job's cell: create them first, so the record names the job before anything fails."""
    return cell_writers(snakemake.config, snakemake.wildcards.cell, Path(snakemake.log[0]))


# --- reading ------------------------------------------------------------------------------------------------------


def read_progress(path: Path) -> dict | None:
    """A cell's progress record, or None without one (or while unreadable: an old file system without atomic
    renames)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def job_alive(record: dict, now: float | None = None) -> bool | None:
    """Whether the record's job still runs: True/False where it ran on this machine (its pid), else whether it wrote
    recently enough (None: silent longer than expected; a cluster job killed without warning looks like this)."""
    if record["host"] == socket.gethostname():
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process has that pid now
            return True
        return True
    age = (now or time.time()) - record["updated"]
    return True if age <= max(QUIET_SECONDS, 3 * (record.get("interval") or 0)) else None


def failure(log: Path, offset: int = 0) -> str | None:
    """The last `failed: ...` line the job logged (`layerlab.workflow.jobs`) from byte `offset` of its log on."""
    try:
        with open(log, "rb") as f:
            f.seek(offset if offset <= log.stat().st_size else 0)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    lines = [line.split(" failed: ", 1)[1] for line in text.splitlines() if " failed: " in line]
    return lines[-1].strip() if lines else None
