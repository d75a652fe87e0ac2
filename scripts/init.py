"""Rule `init`: the cell's network with its seeded initial weights -> init.pt."""

import json
import logging

import torch

from layerlab.data import DatasetUnavailable, input_shape, read_provenance
from layerlab.models import build_model
from layerlab.registry import load_plugins
from layerlab.runtime import run_script, start_log

snakemake = globals()["snakemake"]


def main() -> None:
    start_log(snakemake)
    load_plugins(snakemake.config["plugins"])
    cell = json.loads(snakemake.params.cell)
    meta = read_provenance(snakemake.input.data)  # verifies the dataset's checksum
    shape, n_classes = input_shape(meta, cell["input_pool"]), meta["n_classes"]
    torch.set_num_threads(1)
    model = build_model(cell, shape, n_classes)
    torch.save({"state_dict": model.state_dict(), "cell": cell, "input_shape": shape, "n_classes": n_classes},
               snakemake.output[0])
    logging.info("%s: %d parameters", cell["model"], sum(p.numel() for p in model.parameters()))


run_script(main, DatasetUnavailable)
