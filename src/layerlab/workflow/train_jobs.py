"""The training jobs: one cell (rule `train`) or a pack of cells (rule `pack`), and the outputs every trained cell
writes: its metrics store with its provenance, its final weights."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import torch
import xarray as xr

from layerlab import __version__
from layerlab.core.config import canonical_json
from layerlab.core.store import write_store
from layerlab.data.datasets import Dataset, DatasetUnavailable
from layerlab.nets.layers import Network
from layerlab.nets.models import save_init
from layerlab.training.checkpoint import Checkpoint, Interrupted, catch_signals
from layerlab.training.loop import train_cell
from layerlab.training.pack import build, train_pack
from layerlab.workflow import packs
from layerlab.workflow.jobs import start_log
from layerlab.workflow.runtime import cell_job, load_data, setup


def own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict whose tensors hold only themselves (a packed cell's weights are views of its pack's: saved as
    they are, each would carry the whole fused storage)."""
    return {k: v.clone() if v.untyped_storage().nbytes() != v.nbytes else v for k, v in state.items()}


def write_outputs(ds: xr.Dataset, model: Network, cell_id: str, cell_json: str, device: torch.device,
                  store: str | Path, final: str | Path) -> None:
    """The cell's metrics store (with its parameters and provenance) and final weights."""
    ds.attrs.update(config=cell_json, cell_id=cell_id, layerlab_version=__version__, torch_version=torch.__version__,
                    device=str(device))
    logging.info("%s: test_acc %.4f diverged %s in %.1f s", cell_id, ds.test_acc, bool(ds.diverged),
                 float(ds.train_seconds))
    torch.save(own_storage(model.state_dict()), final)
    write_store(ds, store)


def train_one(snakemake) -> None:
    """Rule `train`: train one cell (resuming from its checkpoint) and write its outputs."""
    cell, device, data, model = cell_job(snakemake)
    settings = snakemake.config["checkpoint"]
    checkpoint = Checkpoint(snakemake.params.checkpoint, cell, settings["every"], settings["minutes"])
    catch_signals([checkpoint])  # SIGTERM/SIGINT (a time limit, preemption, Ctrl-C): checkpoint, then exit non-zero
    logging.info("training %s on %s", snakemake.wildcards.cell, device)
    try:
        ds, model = train_cell(cell, data, model, device, checkpoint)
    except Interrupted as err:
        logging.info("%s", err)
        sys.exit(f"layerlab: {err}")
    write_outputs(ds, model, snakemake.wildcards.cell, snakemake.params.cell, device, snakemake.output.store,
                  snakemake.output.model)
    if not settings["keep"]:
        checkpoint.remove()


def train_pack_job(snakemake) -> None:
    """Rule `pack`: train the pack's cells in this one process (those that fuse as one network), each resuming from
    its own checkpoint, and stage every cell's outputs for its own train job (`layerlab.workflow.packs`)."""
    start_log(snakemake)
    cells = json.loads(snakemake.params.cells)
    device = setup(snakemake.threads)
    settings, staging = snakemake.config["checkpoint"], Path(snakemake.params.staging)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run of this pack staged
    loaded: dict[str, Dataset] = {}
    built, checkpoints = {}, {}
    try:
        for cid, cell in cells.items():
            data = dataset(cell, snakemake.input[cell["dataset"]], device, loaded)
            target = packs.staged(staging, cid)
            target.mkdir(parents=True, exist_ok=True)
            built[cid] = build(cell, data)
            save_init(built[cid].model, cell, data.input_shape, data.n_classes, target / "init.pt")
            checkpoints[cid] = Checkpoint(Path(snakemake.params.checkpoints) / cid, cell, settings["every"],
                                          settings["minutes"])
    except DatasetUnavailable as err:
        sys.exit(f"layerlab: {err}")
    catch_signals(list(checkpoints.values()))
    logging.info("pack %s: %d cells on %s", snakemake.wildcards.pack, len(cells), device)
    try:
        results = train_pack(cells, {cid: loaded[data_key(cell)] for cid, cell in cells.items()}, built, device,
                             checkpoints)
    except Interrupted as err:
        logging.info("%s", err)
        sys.exit(f"layerlab: {err}")
    for cid, (ds, model) in results.items():
        target = packs.staged(staging, cid)
        write_outputs(ds, model, cid, canonical_json(cells[cid]), device, target / "train.zarr", target / "final.pt")
        if not settings["keep"]:
            checkpoints[cid].remove()
    packs.write_manifest(snakemake.output.manifest, staging, snakemake.log[0],
                         {cid: canonical_json(cell) for cid, cell in cells.items()})


def data_key(cell: dict) -> str:
    return json.dumps([cell[k] for k in ("dataset", "train_subset", "test_subset", "input_scaling", "input_pool",
                                         "input_crop", "input_resize")])


def dataset(cell: dict, path: str, device: torch.device, loaded: dict[str, Dataset]) -> Dataset:
    """The cell's dataset, loaded once per process for every cell that reads it the same way."""
    key = data_key(cell)
    if key not in loaded:
        loaded[key] = load_data(cell, Path(path), device)
    return loaded[key]
