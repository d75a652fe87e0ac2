"""Rule `collect`: per-cell stores -> study store (grid axes as dims) + summary table."""

import json

from layerlab import __version__
from layerlab.store import combine_cells, read_store, to_table, write_store

snakemake = globals()["snakemake"]
params = json.loads(snakemake.params.cells)
axes = list(snakemake.params.axes)
cells = {path.split("/cells/", 1)[1].removesuffix("/train.zarr"): read_store(path) for path in snakemake.input}
study = combine_cells(cells, params, axes)
study.attrs.update(study=snakemake.config["study"], axes=json.dumps(axes), layerlab_version=__version__)
write_store(study, snakemake.output.store)
to_table(study, axes).to_csv(snakemake.output.table, index=False, float_format="%.6g")
