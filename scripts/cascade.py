"""Rule `cascade`: reconstruction-entropy cascade of the cell's untrained network -> cascade.zarr."""

from layerlab.probes.cascade import run_cascade
from layerlab.runtime import cell_job
from layerlab.store import write_store

snakemake = globals()["snakemake"]
cell, device, data, model = cell_job(snakemake)
ds = run_cascade(cell, data, model, device)
ds.attrs.update(config=snakemake.params.cell, cell_id=snakemake.wildcards.cell)
write_store(ds, snakemake.output.store)
