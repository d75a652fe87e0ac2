"""Rule `train`: train one cell (resuming from its checkpoint), write its metrics (train.zarr) and final weights."""

import logging

import torch

from layerlab import __version__
from layerlab.core.store import write_store
from layerlab.training.checkpoint import Checkpoint, Interrupted
from layerlab.training.loop import train_cell
from layerlab.workflow.jobs import fail, start_log
from layerlab.workflow.runtime import cell_job
from layerlab.workflow.watch import job_writers

snakemake = globals()["snakemake"]
start_log(snakemake)
writers = job_writers(snakemake)  # first: the cell's progress record names this job, whatever fails next
cell, device, data, model = cell_job(snakemake)
settings = snakemake.config["checkpoint"]
checkpoint = Checkpoint(snakemake.params.checkpoint, cell, settings["every"], settings["minutes"])
checkpoint.catch_signals()  # SIGTERM/SIGINT (a time limit, preemption, Ctrl-C): checkpoint, then exit non-zero
logging.info("training %s on %s", snakemake.wildcards.cell, device)
try:
    ds, model = train_cell(cell, data, model, device, checkpoint, writers)
except Interrupted as err:
    fail(str(err))
ds.attrs.update(config=snakemake.params.cell, cell_id=snakemake.wildcards.cell, layerlab_version=__version__,
                torch_version=torch.__version__, device=str(device))
logging.info("test_acc %.4f diverged %s in %.1f s", ds.test_acc, bool(ds.diverged), float(ds.train_seconds))
torch.save(model.state_dict(), snakemake.output.model)
write_store(ds, snakemake.output.store)
if not settings["keep"]:
    checkpoint.remove()
