"""Rule `collect`: per-cell stores -> study store (grid axes as dims), per-cell and study-level tables."""

import json

import pandas as pd
import xarray as xr

from layerlab import __version__
from layerlab.analysis import add_cascade_prediction, add_trainability, study_summary
from layerlab.store import combine_cells, read_store, to_table, write_store

snakemake = globals()["snakemake"]
params = json.loads(snakemake.params.cells)
axes = list(snakemake.params.axes)
trainability = json.loads(snakemake.params.trainability)


probe_sources = json.loads(snakemake.params.probe_sources)


def cell_store(cid: str) -> xr.Dataset:
    """Training metrics of a cell merged with its probe measurements (training attrs kept)."""
    parts = [read_store(f"{snakemake.params.out}/cells/{cid}/train.zarr")]
    parts += [read_store(f"{snakemake.params.out}/cells/{src[cid]}/{p}.zarr") for p, src in probe_sources.items()]
    ds = xr.merge(parts, combine_attrs="override", join="outer")
    if "cascade" in probe_sources:
        ds = add_cascade_prediction(ds, params[cid]["depth"], probe_sources["cascade"][cid] == cid)
    return ds


study = combine_cells({cid: cell_store(cid) for cid in params}, params, axes)
study = add_trainability(study, trainability["metric"], trainability["threshold"])
summary = study_summary(study)
study.attrs.update(study=snakemake.config["study"], axes=json.dumps(axes), layerlab_version=__version__,
                   **{k: v for k, v in summary.items()})
write_store(study, snakemake.output.store)
to_table(study, axes).to_csv(snakemake.output.table, index=False, float_format="%.6g")
pd.DataFrame([summary]).to_csv(snakemake.output.study, index=False, float_format="%.6g")
print(", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
