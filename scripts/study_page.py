"""Rule `study_page`: study store + config as run + logs -> the report's study page (layerlab.report.study_page)."""

import json
from pathlib import Path

from layerlab.core.config import cell_id
from layerlab.core.store import read_store, stored_cells, to_table
from layerlab.report.study_page import read_logs, status, study_page
from layerlab.workflow.jobs import start_log

snakemake = globals()["snakemake"]
start_log(snakemake)
config = snakemake.config
axes = list(config["grid"])
study = read_store(snakemake.input[0], load=False)  # the per-cell scalars and attrs only are read
table = to_table(study, axes)  # one row per existing cell, in stored_cells' order
cells = [cell_id(json.loads(c), axes) for c in stored_cells(study)]
flagged = [cid for cid, (_, row) in zip(cells, table.iterrows(), strict=True)
           if status(row) in ("diverged", "untrainable")]
attrs = {name: dict(study[name].attrs) for name in table.columns if name in study}
page = study_page(config, table, cells, attrs, read_logs(Path(snakemake.params.logs), flagged))
Path(snakemake.output[0]).write_text(page)
