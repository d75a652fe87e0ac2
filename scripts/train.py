"""Rule `train`: train one cell (resuming from its checkpoint), write its metrics (train.zarr) and final weights."""

import logging
import sys

import torch

from layerlab import __version__
from layerlab.core.disk import WriteFailed
from layerlab.training.checkpoint import Checkpoint, Interrupted
from layerlab.training.loop import train_cell
from layerlab.workflow.runtime import cell_job, job_attrs, write_trained

snakemake = globals()["snakemake"]
cell, device, data, model = cell_job(snakemake)
settings = snakemake.config["checkpoint"]
checkpoint = Checkpoint(snakemake.params.checkpoint, cell, settings["every"], settings["minutes"])
checkpoint.catch_signals()  # SIGTERM/SIGINT (a time limit, preemption, Ctrl-C): checkpoint, then exit non-zero
logging.info("training %s on %s", snakemake.wildcards.cell, device)
try:
    ds, model = train_cell(cell, data, model, device, checkpoint)  # the finished cell kept in its checkpoint
    ds.attrs.update(**job_attrs(snakemake), layerlab_version=__version__,
                    torch_version=torch.__version__, device=str(device))
    logging.info("test_acc %.4f diverged %s in %.1f s", ds.test_acc, bool(ds.diverged), float(ds.train_seconds))
    write_trained(ds, model, snakemake.output, checkpoint, settings["keep"])
except (Interrupted, WriteFailed) as err:
    logging.info("%s", err)
    sys.exit(f"layerlab: {err}")
