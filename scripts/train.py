"""Rule `train`: train one cell, write its metrics (train.zarr) and final weights."""

import logging

import torch

from layerlab import __version__
from layerlab.runtime import cell_job
from layerlab.store import write_store
from layerlab.train import train_cell

snakemake = globals()["snakemake"]
cell, device, data, model = cell_job(snakemake)
logging.info("training %s on %s", snakemake.wildcards.cell, device)
ds, model = train_cell(cell, data, model, device)
ds.attrs.update(config=snakemake.params.cell, cell_id=snakemake.wildcards.cell, layerlab_version=__version__,
                torch_version=torch.__version__, device=str(device))
logging.info("test_acc %.4f diverged %s in %.1f s", ds.test_acc, bool(ds.diverged), float(ds.train_seconds))
torch.save(model.state_dict(), snakemake.output.model)
write_store(ds, snakemake.output.store)
