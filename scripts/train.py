"""Rule `train`: train one cell, write its metrics (train.zarr) and final weights."""

import json
import logging
from pathlib import Path

import torch

from layerlab import __version__
from layerlab.data import load
from layerlab.models import build_model
from layerlab.runtime import setup
from layerlab.store import write_store
from layerlab.train import train_cell

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(message)s")
cell = json.loads(snakemake.params.cell)
device = setup(snakemake.threads)
data = load(Path(snakemake.input.data), device, cell["train_subset"], cell["test_subset"])
init = torch.load(snakemake.input.init, map_location="cpu")
model = build_model(cell, init["input_shape"], init["n_classes"])
model.load_state_dict(init["state_dict"])
logging.info("training %s on %s", snakemake.wildcards.cell, device)
ds, model = train_cell(cell, data, model, device)
ds.attrs.update(config=snakemake.params.cell, cell_id=snakemake.wildcards.cell, layerlab_version=__version__,
                torch_version=torch.__version__, device=str(device))
logging.info("test_acc %.4f diverged %s in %.1f s", ds.test_acc, bool(ds.diverged), float(ds.train_seconds))
torch.save(model.state_dict(), snakemake.output.model)
write_store(ds, snakemake.output.store)
