"""The training jobs: one cell (rule `train`) or a pack of cells (rule `pack`), and the outputs every trained cell
writes: its metrics store with its provenance, its final weights."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
import xarray as xr

from layerlab import __version__
from layerlab.core.cell import Cell
from layerlab.core.disk import WriteFailed, writing
from layerlab.core.sections import DataParams
from layerlab.core.store import write_store
from layerlab.data.datasets import Dataset, DatasetUnavailable, load
from layerlab.nets.layers import Network
from layerlab.nets.models import save_init
from layerlab.training.checkpoint import Checkpoint, Interrupted, catch_signals, own_storage
from layerlab.training.loop import train_cell
from layerlab.training.pack import Built, build, train_pack
from layerlab.workflow import packs
from layerlab.workflow.jobs import fail, start_log
from layerlab.workflow.runtime import cell_job, job_attrs, setup
from layerlab.workflow.watch import cell_writers, job_writers


def write_outputs(ds: xr.Dataset, model: Network, store: str | Path, final: str | Path, checkpoint: Checkpoint,
                  keep: bool) -> None:
    """A trained cell's final weights and train.zarr, after training saved the finished result in `checkpoint`; the
    checkpoint is removed then unless `keep`. A failed write raises WriteFailed naming the file, the free space and
    where the trained cell is kept (the rerun only writes)."""
    logging.info("%s: test_acc %.4f diverged %s in %.1f s", ds.attrs.get("cell_id"), ds.test_acc, bool(ds.diverged),
                 float(ds.train_seconds))
    try:
        with writing(final):
            torch.save(own_storage(model.state_dict()), final)
        write_store(ds, store)
    except WriteFailed as err:
        raise WriteFailed(f"{err}; {checkpoint.kept}") from err
    if not keep:
        checkpoint.remove()


def provenance(device: torch.device) -> dict[str, str]:
    """What a store records of the code and device that trained it."""
    return {"layerlab_version": __version__, "torch_version": torch.__version__, "device": str(device)}


def train_one(snakemake) -> None:
    """Rule `train`: train one cell (resuming from its checkpoint) and write its outputs."""
    start_log(snakemake)
    writers = job_writers(snakemake)  # first: the cell's progress record names this job, whatever fails next
    cell, device, data, model = cell_job(snakemake)
    settings = snakemake.config["checkpoint"]
    checkpoint = Checkpoint(snakemake.params.checkpoint, cell, settings["every"], settings["minutes"])
    catch_signals([checkpoint])  # SIGTERM/SIGINT (a time limit, preemption, Ctrl-C): checkpoint, then exit non-zero
    logging.info("training %s on %s", snakemake.wildcards.cell, device)
    try:
        # the finished cell is kept in its checkpoint before its outputs are written
        ds, model = train_cell(cell, data, model, device, checkpoint, writers)
        ds.attrs.update(**job_attrs(snakemake), **provenance(device))
        write_outputs(ds, model, snakemake.output.store, snakemake.output.model, checkpoint, settings["keep"])
    except (Interrupted, WriteFailed) as err:
        fail(str(err))


def train_pack_job(snakemake) -> None:
    """Rule `pack`: train the pack's cells in this one process (those that fuse as one network), each resuming from
    its own checkpoint, and stage every cell's outputs for its own train job (`layerlab.workflow.packs`)."""
    start_log(snakemake)
    cells = {cid: Cell.parse(values) for cid, values in json.loads(snakemake.params.cells).items()}
    writers = {cid: cell_writers(snakemake.config, cid, Path(snakemake.log[0])) for cid in cells}  # the pack's log
    device = setup(snakemake.threads)
    settings, staging = snakemake.config["checkpoint"], Path(snakemake.params.staging)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run of this pack staged
    loaded: dict[DataParams, Dataset] = {}
    built: dict[str, Built] = {}
    checkpoints: dict[str, Checkpoint] = {}
    try:
        for cid, cell in cells.items():
            data = dataset(cell.data, snakemake.input[cell.data.dataset], device, loaded)
            target = packs.staged(staging, cid)
            target.mkdir(parents=True, exist_ok=True)
            built[cid] = build(cell, data)
            with writing(target / "init.pt"):
                save_init(built[cid].model, cell, data.input_shape, data.n_classes, target / "init.pt")
            checkpoints[cid] = Checkpoint(Path(snakemake.params.checkpoints) / cid, cell, settings["every"],
                                          settings["minutes"])
    except (DatasetUnavailable, WriteFailed) as err:
        fail(str(err))
    catch_signals(list(checkpoints.values()))
    logging.info("pack %s: %d cells on %s", snakemake.wildcards.pack, len(cells), device)
    try:
        results = train_pack(cells, {cid: loaded[cell.data] for cid, cell in cells.items()}, built, device,
                             checkpoints, writers)
    except Interrupted as err:
        fail(str(err))
    plugins = json.loads(snakemake.params.plugins)
    try:
        for cid, (ds, model) in results.items():
            target = packs.staged(staging, cid)
            ds.attrs.update(config=cells[cid].json, cell_id=cid, plugins=plugins.get(cid, "{}"),
                            **provenance(device))
            write_outputs(ds, model, target / "train.zarr", target / "final.pt", checkpoints[cid], settings["keep"])
    except WriteFailed as err:
        fail(str(err))
    packs.write_manifest(snakemake.output.manifest, staging, snakemake.log[0],
                         {cid: cell.json for cid, cell in cells.items()})


def dataset(data: DataParams, path: str, device: torch.device, loaded: dict[DataParams, Dataset]) -> Dataset:
    """The dataset as `data` reads it, loaded once per process for every cell that reads it the same way."""
    if data not in loaded:
        loaded[data] = load(Path(path), device, data)
    return loaded[data]
