"""Rule `dataset`: prepare one dataset into resources/ (see layerlab.data.datasets)."""

from pathlib import Path

from layerlab.data.datasets import DatasetUnavailable, prepare
from layerlab.workflow.runtime import run_script, start_log

snakemake = globals()["snakemake"]
start_log(snakemake)
run_script(lambda: prepare(snakemake.wildcards.dataset, Path(snakemake.output.npz), Path(snakemake.params.downloads)),
           DatasetUnavailable)
