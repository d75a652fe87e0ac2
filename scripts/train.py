"""Rule `train`: take over the outputs the cell's pack staged, or train the cell (resuming from its checkpoint) and
write its metrics (train.zarr) and final weights. The take-over imports no torch: it costs a few file moves."""

from layerlab.workflow import packs

snakemake = globals()["snakemake"]
if not ("pack" in snakemake.input.keys() and packs.take_over_job(snakemake)):
    from layerlab.workflow.train_jobs import train_one

    train_one(snakemake)
