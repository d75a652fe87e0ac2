"""Rule `plots`: one figure per entry of the config's `plots`."""

import json
from pathlib import Path

from layerlab.plots import save_plot
from layerlab.registry import load_plugins
from layerlab.runtime import start_log
from layerlab.store import read_store

snakemake = globals()["snakemake"]
start_log(snakemake)
load_plugins(snakemake.config["plugins"])
study = read_store(snakemake.input[0])
for spec, out in zip(json.loads(snakemake.params.plots), snakemake.output, strict=True):
    save_plot(study, spec, Path(out))
