"""Rule `plots`: one figure of the config's `plots` (its spec in params); a failure names the plot."""

import sys
import traceback
from pathlib import Path

import yaml

from layerlab.core.registry import load_plugins
from layerlab.core.store import read_store
from layerlab.report.plots import save_plot

snakemake = globals()["snakemake"]
load_plugins(snakemake.config["plugins"])
spec = yaml.safe_load(snakemake.params.spec)
with open(snakemake.log[0], "w") as log:
    try:
        save_plot(read_store(snakemake.input[0]), spec, Path(snakemake.output[0]))
    except Exception as err:
        traceback.print_exc(file=log)
        sys.exit(f"layerlab: plot '{spec['name']}' (kind {spec['kind']}) failed: {type(err).__name__}: {err}; "
                 f"the other figures are unaffected (traceback: {snakemake.log[0]})")
    print(f"wrote {snakemake.output[0]}", file=log)
