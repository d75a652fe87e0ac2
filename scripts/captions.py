"""Rule `captions`: the study store's variable descriptions -> each figure's report caption (figures/<plot>.rst)."""

import json
from pathlib import Path

from layerlab.core.registry import load_plugins
from layerlab.core.store import read_store
from layerlab.report.captions import plot_caption
from layerlab.workflow.jobs import start_log

snakemake = globals()["snakemake"]
start_log(snakemake)
load_plugins(snakemake.config["plugins"])
study = read_store(snakemake.input[0], load=False)  # the variables' attrs, not their values
for spec, out in zip(json.loads(snakemake.params.plots), snakemake.output, strict=True):
    Path(out).write_text(plot_caption(study, spec))
