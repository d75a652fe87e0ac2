"""What every job script does first: pick the device, pin torch threads, make runs deterministic."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from layerlab.core.cell import Cell
from layerlab.core.disk import WriteFailed, writing
from layerlab.data.datasets import Dataset, DatasetUnavailable, load
from layerlab.nets.layers import Network
from layerlab.nets.models import build_model, load_init, save_init
from layerlab.workflow import gpus
from layerlab.workflow.jobs import fail, run_script, start_log  # noqa: F401  (re-exported: editing the dataset script would rerun every study)


def device() -> torch.device:
    """CUDA when available (overridable with LAYERLAB_DEVICE=cpu|cuda), else CPU. A local GPU pool
    (layerlab.workflow.gpus) pins the job to one device first, before torch initialises CUDA."""
    if os.environ.get("LAYERLAB_DEVICE") != "cpu":
        gpus.claim()
    name = os.environ.get("LAYERLAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(threads: int) -> torch.device:
    """One job = `threads` torch threads (parallel jobs must not oversubscribe the cores)."""
    torch.set_num_threads(max(1, threads))
    # cuBLAS is deterministic only with a fixed workspace, read when CUDA first creates a handle (after this call);
    # without it use_deterministic_algorithms warns on every CUDA matmul and results vary from run to run
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    return device()


def job_attrs(snakemake) -> dict[str, str]:
    """What a per-cell store records of its job: the cell's parameters and id, and the digests of the plug-in code it
    ran (layerlab.workflow.plugin_code; `python -m layerlab.diff` compares both with the study's)."""
    return {"config": snakemake.params.cell, "cell_id": snakemake.wildcards.cell,
            "plugins": snakemake.params.get("plugins", "{}")}


def cell_job(snakemake) -> tuple[Cell, torch.device, Dataset, Network]:
    """A per-cell job's inputs: (cell parameters, device, dataset on the device, network with its init weights,
    built and saved to the `init` output by the train job, loaded from the `init` input by a measurement); its log
    started and the study's plug-ins loaded."""
    start_log(snakemake)
    cell = Cell.parse(json.loads(snakemake.params.cell))
    device = setup(snakemake.threads)
    try:
        data = load(Path(snakemake.input.data), device, cell.data)
    except DatasetUnavailable as err:  # a missing or corrupt dataset: its message alone, naming the fix
        fail(str(err))
    if "init" in snakemake.input.keys():  # a measurement: the network the train job initialised
        return cell, device, data, load_init(snakemake.input.init, cell)
    model = build_model(cell, data.input_shape, data.n_classes)  # the train job: seeded initial weights
    try:
        with writing(snakemake.output.init):
            save_init(model, cell, data.input_shape, data.n_classes, snakemake.output.init)
    except WriteFailed as err:
        fail(str(err))
    logging.info("%s: %d parameters", cell.model.model, sum(p.numel() for p in model.parameters()))
    return cell, device, data, model
