"""Rule `claims`: study store -> claims.csv (one row per claim, with its verdict) and claims.rst (the report's
opening)."""

import json
import logging
from pathlib import Path

from layerlab.core.store import read_store
from layerlab.report.claims import evaluate, interval_text, summary_line, threshold, to_rst
from layerlab.workflow.jobs import start_log

snakemake = globals()["snakemake"]
start_log(snakemake)
table = evaluate(read_store(snakemake.input.store), json.loads(snakemake.params.claims), snakemake.params.scale)
table.to_csv(snakemake.output.table, index=False, float_format="%.6g")
Path(snakemake.output.rst).write_text(to_rst(table, snakemake.config["study"]))
logging.info(f"{summary_line(table['verdict'])} claims")
for row in table.itertuples():
    logging.info(f"{row.name}: {row.measured:.4g} ({interval_text(row.ci_low, row.ci_high, row.n_seeds)}), claim "
                 f"{threshold(row.op, row.value)}: {row.verdict}")
