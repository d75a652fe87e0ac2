"""Where a study stands while it runs: each cell done, running, failed, pending or stale, and the study's progress.

    python -m layerlab.status [--configfile STUDY.yaml] [--config KEY=VALUE ...] [-d WORKDIR] [--watch SECONDS] [--all]

Reads only what the jobs write, so it works beside a local or a SLURM run on a shared file system, with no server:
a cell's train.zarr (done; stale where its recorded config differs from the study's now, as `layerlab.diff` sees it),
its training job's progress record (running: step, loss, last test accuracy, steps/s, ETA;
`layerlab.workflow.watch`) and log (failed: the error it logged). Torch-free; a 1,000-cell study takes about a second.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from layerlab.core.cell import Cell
from layerlab.core.config import ConfigError
from layerlab.core.messages import duration
from layerlab.workflow.diff import changes, load_study, plugin_changes, recorded, study_arguments
from layerlab.workflow.paths import CellFiles, study_dir
from layerlab.workflow.plugin_code import job_plugins
from layerlab.workflow.validate import check_study
from layerlab.workflow.watch import failure, job_alive, read_progress

STATES = ("done", "running", "failed", "stale", "pending")  # the study line's order
LISTED = 40  # larger studies list only their running, failed and stale cells (--all: every cell)
BLOCKS = " ▏▎▍▌▋▊▉█"


@dataclass
class CellStatus:
    cell: str
    state: str  # one of STATES
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    test_acc: float | None = None
    rate: float | None = None  # steps/s
    eta: float | None = None  # seconds
    note: str = ""  # failed: the error; stale: what changed; running: starting, saving, or silent for how long
    log: Path | None = None

    @property
    def fraction(self) -> float:
        """How much of its training is done (0 for a cell that will run from the start)."""
        if self.state == "done":
            return 1.0
        return self.step / self.total if self.state == "running" and self.step is not None and self.total else 0.0


def from_record(status: CellStatus, record: dict) -> CellStatus:
    for key in ("step", "total", "loss", "test_acc", "rate", "eta"):
        setattr(status, key, record.get(key))
    return status


def cell_status(cell_id: str, cell: Cell, files: CellFiles, now: float, plugins: bool = False) -> CellStatus:
    """A cell's state from its store, its progress record and its log; `plugins`: the study has plug-ins (their code
    is compared too)."""
    record, attrs = read_progress(files.progress), recorded(files.store.parent)
    if attrs is not None:
        status = CellStatus(cell_id, "done")
        why = [f"{k} {json.dumps(a)} -> {json.dumps(b)}"
               for k, a, b in changes(json.loads(attrs["config"]), cell.to_dict())]
        if why := why + (plugin_changes(attrs, job_plugins(cell)) if plugins else []):
            status.state, status.note = "stale", ", ".join(why)
        return from_record(status, record) if record and record["state"] == "finished" else status
    if record is None:  # no job has started (or one from before the records failed)
        error = failure(files.log)
        return CellStatus(cell_id, "failed", note=error, log=files.log) if error else CellStatus(cell_id, "pending")
    log = files.root.parents[1] / record["log"]  # the job's: a pack's log for a packed cell
    alive = job_alive(record, now)
    error = failure(log, record["log_offset"]) if alive is False else None
    if alive is False and (error or record["state"] != "finished"):
        error = error or f"stopped at step {record.get('step') or 0} without an error in its log"
        return from_record(CellStatus(cell_id, "failed", note=error, log=log), record)
    status = from_record(CellStatus(cell_id, "running"), record)
    if alive is False:  # trained without an error: its outputs wait for its own job (a pack's take-over)
        status.note = "saving"
    elif alive is None:
        status.note = f"silent {duration(now - record['updated'])}"
    elif record["state"] == "starting":
        status.note = "starting"
    elif record["state"] == "finished":
        status.note = "saving"
    return status


def study_status(config: dict, cells: dict[str, Cell], workdir: Path) -> list[CellStatus]:
    root, now, plugins = study_dir(config["study"], workdir), time.time(), bool(config["plugins"])
    return [cell_status(cid, cell, CellFiles(root, cid), now, plugins) for cid, cell in cells.items()]


# --- the table ------------------------------------------------------------------------------------------------------


def bar(fraction: float, width: int) -> str:
    """A tqdm-style bar: full blocks and one eighth-block."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def number(value: float | None, spec: str = ".3g", width: int = 7) -> str:
    """`value` in at most `width` columns (3 significant digits, else 2 in e-notation); blank when unknown."""
    if value is None or not math.isfinite(value):
        return ""
    text = format(value, spec)
    return text if len(text) <= width else f"{value:.1e}"


def fit(label: str, width: int) -> str:
    """A cell's label in `width` columns, cut on the left with an ellipsis (the end of a cell id varies most)."""
    return label if len(label) <= width else "…" + label[len(label) - width + 1:]


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def study_eta(rows: list[CellStatus]) -> float:
    """Seconds until the running, pending and stale cells are trained: at the pace of the running ones (cells per
    second, however many run at once), and no sooner than the slowest running cell ends; NaN while none runs."""
    running = [r for r in rows if r.state == "running" and r.fraction < 1]
    pace = sum(r.rate / r.total for r in running if r.rate and r.total)
    left = sum(1 - r.fraction for r in rows if r.state in ("running", "pending", "stale"))
    if pace <= 0:
        return 0.0 if left == 0 else math.nan
    return max(left / pace, *(r.eta for r in running if r.eta is not None))


def render(study: str, axes: list[str], rows: list[CellStatus], width: int = 80, every: bool = False) -> str:
    """The study line, its bar, and a row per cell (larger studies: the running, failed and stale ones)."""
    counts = Counter(r.state for r in rows)
    done = sum(r.fraction for r in rows) / max(len(rows), 1)
    tally = f"{len(rows)} cells: " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    lines = [f"{study}  {tally}"] if len(study) + 2 + len(tally) <= width else [study, tally]
    lines.append(f"{bar(done, width - 22)} {100 * done:3.0f}%  ETA {duration(study_eta(rows)):>7}")
    name = max(10, width - 61)
    lines.append(f"{fit('/'.join(axes), name):<{name}} {'state':<7} {'progress':<10} {'steps':>11} {'loss':>7} "
                 f"{'acc':>6} {'steps/s':>7} {'ETA':>6}")
    short = not every and len(rows) > LISTED
    for r in rows:
        if short and r.state in ("done", "pending"):
            continue
        label = fit("/".join(part.split("~", 1)[1] for part in r.cell.split("/")), name)
        head = f"{label:<{name}} {r.state:<7} "
        if r.state in ("failed", "stale"):
            lines.append(clip(head + r.note, width))
            if r.log is not None:
                lines.append(f"{'':<{name}}   log: {r.log}")
            continue
        steps = f"{r.step}/{r.total}" if r.step is not None and r.total else ""
        eta = duration(r.eta if r.eta is not None else math.nan) if r.state == "running" else ""
        pace = f"{r.note:>14}" if r.note else f"{number(r.rate):>7} {eta:>6}"  # a note: in their place
        lines.append(f"{head}{bar(r.fraction, 10)} {steps:>11} {number(r.loss):>7} {number(r.test_acc, '.3f'):>6} "
                     f"{pace}".rstrip())
    if short and (hidden := [s for s in ("done", "pending") if counts[s]]):
        lines.append(f"({', '.join(f'{counts[s]} {s}' for s in hidden)} not listed: --all lists every cell)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerlab.status", description=__doc__.split("\n\n")[0])
    study_arguments(parser)
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="redraw every SECONDS until every cell is done")
    parser.add_argument("--all", action="store_true", help=f"list every cell (else above {LISTED} cells only the "
                        f"running, failed and stale ones)")
    args = parser.parse_args(argv)
    try:
        config, cli = load_study(args)
        cells = check_study(config, cli, args.configfile.parent)
    except ConfigError as err:
        print(f"layerlab config error: {err}", file=sys.stderr)
        return 2
    tty = sys.stdout.isatty()
    try:
        while True:
            rows = study_status(config, cells, args.directory)
            width = shutil.get_terminal_size((80, 24)).columns
            table = render(config["study"], list(config["grid"]), rows, width, args.all)
            print(("\033[H\033[J" if tty and args.watch else "") + table, flush=True)
            if not args.watch or all(r.state == "done" for r in rows):
                return 0
            time.sleep(args.watch)
            if not tty:
                print()
    except KeyboardInterrupt:  # how a watch ends
        return 0
