"""Rule `pack`: train a pack's cells in one process and stage their outputs (layerlab.workflow.train_jobs)."""

from layerlab.workflow.train_jobs import train_pack_job

train_pack_job(globals()["snakemake"])
