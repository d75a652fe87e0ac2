"""A study's cells as TensorBoard runs, results/<study>/tensorboard/<cell>/: live from the training jobs (the study's
`tensorboard: true`) or exported from a study's stores afterwards (`python -m layerlab.tensorboard results/<study>`).

    pip install -e '.[tensorboard]'; tensorboard --logdir results/<study>/tensorboard

Tags are the store's variable names: a variable with a `step` (or `eval_step`) dimension at each of its steps, as
`name` (one value per step: loss, ce, test_acc_curve), `name/layer_k` (one per index of a second dimension: each
per-layer probe variable) or a histogram `name/layer_k` over the rest (BatchNorm's gamma over channels, curvature
eigenvalues). When the cell is trained: each numeric 0-d variable as `summary/name` (test_acc, train_acc, diverged, ...)
and each 1-d one without steps as `summary/name/dim_v`. NaN (not measured, padding) is left out. One HParams record
per run: the cell's grid axes as hparams (its session group is the cell id), the `summary/` scalars as metrics, so the
HParams dashboard compares the cells.

A training job writes each logged step's values one logged step later (a probe's records of a step are complete only
after its update), at most every `FLUSH_SECONDS`, and the rest when the cell is trained; a resumed job rewrites the
cell's run from its restored records.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from layerlab.catalog.regimes import RUN_VARIABLES
from layerlab.core.config import expand_cells
from layerlab.core.registry import PROBES
from layerlab.core.store import read_store
from layerlab.workflow.paths import CellFiles
from layerlab.workflow.validate import TENSORBOARD_EXTRA

if TYPE_CHECKING:
    from tensorboard.compat.proto.summary_pb2 import Summary

    from layerlab.training.loop import Loop
    from layerlab.training.progress import Tick

log = logging.getLogger("layerlab.workflow.tensorboard")
STEP_DIMS = ("step", "eval_step")
FLUSH_SECONDS = 10.0  # a training job writes its TensorBoard run at most this often (and when the cell is trained)


def label(ds: xr.Dataset, dim: Hashable, index: int) -> str:
    """`layer_3`: a dimension and the coordinate value at `index` (the index itself without a coordinate)."""
    return f"{dim}_{ds[dim].values[index] if dim in ds.coords else index}"


def numeric(var: xr.DataArray) -> bool:
    return var.dtype.kind in "biuf"


def histogram(values: np.ndarray) -> Any:
    """A TensorBoard histogram of the finite `values` (None without any)."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    values = values[np.isfinite(values)].astype(np.float64)
    if not values.size:
        return None
    counts, edges = np.histogram(values, bins=min(30, values.size))
    return HistogramProto(min=values.min(), max=values.max(), num=values.size, sum=values.sum(),
                          sum_squares=float(np.square(values).sum()), bucket_limit=edges[1:].tolist(),
                          bucket=counts.tolist())


def series(ds: xr.Dataset, after: float = -math.inf, before: float = math.inf) -> dict[int, list]:
    """Step -> summary values of every variable with a step dimension, for the steps in (after, before)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    out: dict[int, list] = defaultdict(list)
    for name, var in ds.data_vars.items():
        dim = next((d for d in STEP_DIMS if d in var.dims), None)
        if dim is None or not numeric(var):
            continue
        var, steps = var.transpose(dim, ...), ds[dim].values
        index = np.flatnonzero((steps > after) & (steps < before))
        values = var.values[index].astype(np.float64)  # only the new steps (a live run asks every few seconds)
        for row, step in zip(values, steps[index].tolist(), strict=True):
            if row.ndim == 0:
                if not np.isnan(row):
                    out[step].append(Summary.Value(tag=str(name), simple_value=float(row)))
                continue
            for k in range(row.shape[0]):
                tag = f"{name}/{label(ds, var.dims[1], k)}"
                if row.ndim == 1 and not np.isnan(row[k]):
                    out[step].append(Summary.Value(tag=tag, simple_value=float(row[k])))
                elif row.ndim > 1 and (hist := histogram(row[k].ravel())) is not None:
                    out[step].append(Summary.Value(tag=tag, histo=hist))
    return out


def summary_values(ds: xr.Dataset) -> list:
    """`summary/name` of each numeric 0-d variable, `summary/name/dim_v` of each 1-d one without steps."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    out = []
    for name, var in ds.data_vars.items():
        if not numeric(var) or var.ndim > 1 or any(d in STEP_DIMS for d in var.dims):
            continue
        values = var.values.astype(np.float64).reshape(-1)
        tags = [f"summary/{name}"] if var.ndim == 0 else [f"summary/{name}/{label(ds, var.dims[0], k)}"
                                                          for k in range(values.size)]
        out += [Summary.Value(tag=t, simple_value=float(v)) for t, v in zip(tags, values, strict=True)
                if not np.isnan(v)]
    return out


def ordered(names: Iterable[str]) -> list[str]:
    """The training loop's scalars first, in their declared order (test_acc, ...: the HParams dashboard shows the first
    few), then the others by name."""
    first = list(RUN_VARIABLES)
    return sorted(set(names), key=lambda n: (first.index(n), "") if n in first else (len(first), n))


def metrics(ds: xr.Dataset) -> list[str]:
    """The HParams metrics of a cell: its numeric 0-d variables."""
    return ordered(str(name) for name, var in ds.data_vars.items() if numeric(var) and var.ndim == 0)


# --- HParams --------------------------------------------------------------------------------------------------------


def hparam_types(cells: Iterable[dict], axes: list[str]) -> dict[str, type]:
    """Per grid axis the type its hparam takes: bool, float (numbers) or str (anything else, or a mix)."""
    kinds: dict[str, set[type]] = {axis: set() for axis in axes}
    for cell in cells:
        for axis in axes:
            value = cell[axis]
            kinds[axis].add(bool if isinstance(value, bool) else float if isinstance(value, int | float) else str)
    return {axis: found.pop() if len(found) == 1 else str for axis, found in kinds.items()}


class HParams:
    """The hparams of a study's cells: the grid axes, each with the values its cells take."""

    def __init__(self, cells: Iterable[dict], axes: list[str]):
        cells = list(cells)
        self.types = hparam_types(cells, axes)
        self.domains = {axis: sorted({self.value(axis, c[axis]) for c in cells}) for axis in axes}

    def value(self, axis: str, value: Any) -> bool | float | str:
        kind = self.types[axis]
        return json.dumps(value) if kind is str and not isinstance(value, str) else kind(value)

    def session(self, cell_id: str, cell: dict) -> Summary:
        """The run's HParams record: the cell's value on every axis; its session group is the cell id."""
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        return hparams_pb({axis: self.value(axis, cell[axis]) for axis in self.domains}, trial_id=cell_id)

    def experiment(self, names: list[str]) -> Summary:
        """The study's hparams with their values, and the `summary/` metrics `names` the dashboard shows."""
        from tensorboard.plugins.hparams.summary_v2 import Discrete, HParam, Metric, hparams_config_pb

        return hparams_config_pb([HParam(axis, Discrete(values)) for axis, values in self.domains.items()],
                                 [Metric(f"summary/{name}") for name in names])


# --- writing ----------------------------------------------------------------------------------------------------------


class Board:
    """One cell's TensorBoard run, written anew."""

    def __init__(self, directory: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        self.writer = EventFileWriter(str(directory))
        self.last = 0

    def add(self, step: int, values: list | Summary) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = values if isinstance(values, Summary) else Summary(value=values)
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def write(self, ds: xr.Dataset, after: float = -math.inf, before: float = math.inf) -> None:
        for step, values in sorted(series(ds, after, before).items()):
            self.add(step, values)
            self.last = max(self.last, step)

    def finish(self, ds: xr.Dataset, hparams: HParams, names: list[str], after: float = -math.inf) -> None:
        """The rest of the cell's steps, its summary metrics at its last step, the HParams experiment; closed."""
        self.write(ds, after)
        self.add(self.last, summary_values(ds))
        self.add(0, hparams.experiment(names))
        self.writer.close()


class LiveBoard:
    """A training job's writer (`layerlab.training.progress.ProgressWriter`) of its cell's TensorBoard run."""

    def __init__(self, directory: Path, cell_id: str, cell: dict, hparams: HParams, every: float = FLUSH_SECONDS):
        self.board, self.hparams, self.every = Board(directory), hparams, every
        self.board.add(0, hparams.session(cell_id, cell))
        self.board.writer.flush()
        self.written, self.last = -1, -math.inf
        self.later: dict[str, list[str]] = {}  # the probes written only at the end: their variables

    @classmethod
    def for_cell(cls, config: dict, cell_id: str, directory: Path) -> LiveBoard:
        cells = expand_cells(config)
        return cls(directory, cell_id, cells[cell_id], HParams(cells.values(), list(config["grid"])))

    def logged(self, tick: Tick, loop: Loop) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        self.board.write(self.dataset(loop), after=self.written, before=tick.step)
        self.written = tick.step - 1
        self.board.writer.flush()

    def dataset(self, loop: Loop) -> xr.Dataset:
        """The cell's variables with steps so far: the loop's records and each probe's (a probe that cannot give
        them before the end raises; its variables are then written at the end)."""
        from layerlab.training.loop import run_dataset

        parts: list[xr.Dataset | None] = [run_dataset(loop.run, loop.diverged_step, math.nan, math.nan, math.nan)]
        for name, probe in zip(loop.names, loop.probes, strict=True):
            if name in self.later:
                continue
            try:
                parts.append(probe.variables(loop.run.steps))
            except Exception as err:  # a plug-in probe that can only answer at the end: not worth a failed cell
                log.warning("tensorboard: probe %s gives no variables before the end (%s: %s); they are written "
                            "when the cell is trained", name, type(err).__name__, err)
                self.later[name] = list(PROBES[name].variables)
        return xr.merge([p for p in parts if p is not None], join="outer", compat="no_conflicts",
                        combine_attrs="override")

    def finished(self, ds: xr.Dataset) -> None:
        later = [name for names in self.later.values() for name in names if name in ds]
        self.board.write(ds[later], before=self.written + 1)
        self.board.finish(ds, self.hparams, metrics(ds), after=self.written)


# --- export ---------------------------------------------------------------------------------------------------------


def grid_axes(cell_id: str) -> list[str]:
    """The grid axes a cell id names (`depth~10/loss~ce` -> depth, loss)."""
    return [part.split("~", 1)[0] for part in cell_id.split("/")]


def export_study(root: Path) -> list[str]:
    """Write every trained cell of the study folder `root` (results/<study>) as its TensorBoard run, each from its
    train.zarr; returns the cell ids."""
    stores = sorted((root / "cells").rglob("train.zarr"))
    if not stores:
        raise FileNotFoundError(f"{root}: no trained cell (no cells/*/train.zarr)")
    cells, names = {}, set()
    for store in stores:  # lazily: attributes and shapes
        with read_store(store, load=False) as ds:
            cells[ds.attrs["cell_id"]] = (store, json.loads(ds.attrs["config"]))
            names.update(metrics(ds))
    hparams = HParams([cell for _, cell in cells.values()], grid_axes(next(iter(cells))))
    for cell_id, (store, cell) in cells.items():
        board = Board(CellFiles(root, cell_id).tensorboard)
        board.add(0, hparams.session(cell_id, cell))
        board.finish(read_store(store), hparams, ordered(names))
    return list(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerlab.tensorboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="the study's results folder, results/<study>")
    args = parser.parse_args(argv)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(f"layerlab: the export needs the tensorboard package: {TENSORBOARD_EXTRA}", file=sys.stderr)
        return 2
    try:
        cells = export_study(args.study)
    except FileNotFoundError as err:
        print(f"layerlab: {err}", file=sys.stderr)
        return 2
    logdir = args.study / "tensorboard"
    print(f"{len(cells)} cells -> {logdir}/<cell>/  (view: tensorboard --logdir {logdir})")
    return 0
