"""Rules `train` and `take_over`: train one cell (resuming from its checkpoint) and write its metrics (train.zarr) and
final weights, or move the outputs its pack staged into place (no torch: a few file moves). One script for both, so
a cell's record in Snakemake is the same whichever made it."""

from layerlab.workflow import packs

snakemake = globals()["snakemake"]
if not (snakemake.rule == "take_over" and packs.take_over_job(snakemake)):
    from layerlab.workflow.train_jobs import train_one

    train_one(snakemake)
