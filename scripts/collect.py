"""Rule `collect`: per-cell stores -> study store (grid axes as dims), per-cell and study-level tables."""

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import xarray as xr

from layerlab import __version__
from layerlab.core.cell import Cell
from layerlab.core.registry import MEASUREMENTS, load_plugins, resolve
from layerlab.core.store import combine_cells, describe, read_store, store_dir, to_table, write_store
from layerlab.report.analysis import add_trainability, study_summary
from layerlab.workflow.jobs import start_log

snakemake = globals()["snakemake"]
start_log(snakemake)
load_plugins(snakemake.config["plugins"])
params = json.loads(snakemake.params.cells)
axes = list(snakemake.params.axes)
measurements = {name: MEASUREMENTS[name] for name in snakemake.params.measurements}
trainability = json.loads(snakemake.params.trainability)


def cell_store(i: int, cid: str) -> xr.Dataset:
    """Training metrics of the i-th cell merged with the measurements it reads (training attrs kept), and what
    each measurement derives per cell; opened lazily (combine_cells reads one cell's arrays at a time)."""
    train = store_dir(snakemake.input.train[i])
    sources = {name: store_dir(snakemake.input[name][i]) for name in measurements}
    ds = xr.merge([read_store(train, load=False), *(read_store(path, load=False) for path in sources.values())],
                  combine_attrs="override", join="outer")
    for name, spec in measurements.items():
        if spec.collect:
            ds = resolve(spec.collect)(ds, Cell.parse(params[cid]), sources[name] == train.with_name(f"{name}.zarr"))
    return ds


with ThreadPoolExecutor(8) as pool:  # opening a store mostly waits on zarr's I/O loop: overlap them (~1.3x)
    cells = dict(zip(params, pool.map(cell_store, range(len(params)), params), strict=True))
study = combine_cells(cells, params, axes)
study = add_trainability(study, trainability["metric"], trainability["threshold"])
summary = study_summary(study)
for spec in measurements.values():
    summary |= resolve(spec.summarize)(study) if spec.summarize else {}
    describe(study, spec.variables)
study.attrs.update(study=snakemake.config["study"], axes=json.dumps(axes), layerlab_version=__version__, **summary)
write_store(study, snakemake.output.store)
to_table(study, axes).to_csv(snakemake.output.table, index=False, float_format="%.6g")
pd.DataFrame([summary]).to_csv(snakemake.output.study, index=False, float_format="%.6g")
logging.info(", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
