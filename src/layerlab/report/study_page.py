"""The report's study page: one self-contained HTML file (it opens inside the Snakemake report, offline): the study
config as run (YAML), its grid, every cell's summary metrics in a sortable, filterable table, and the logs of the
cells that diverged or did not train, linked from their rows."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

import pandas as pd
import yaml

from layerlab.report.compare import COST_UNITS
from layerlab.report.labels import UNITLESS

ASSETS = Path(__file__).resolve().parent / "assets"  # package data: the page's style and script
LOG_LINES = 400  # the tail of a long log kept on the page
STATUSES = {"diverged": "training hit a non-finite loss", "untrainable": "below the study's trainability threshold",
            "trained": "at or above the trainability threshold", "unknown": "no trainability value"}
STATUS_HELP = "; ".join(f"{name}: {meaning}" for name, meaning in STATUSES.items())
FIRST = ("test_acc", "train_acc", "train_loss", "test_loss", "trainable", "diverged")  # the table's first metrics


class _Dumper(yaml.SafeDumper):
    """Block YAML with lists of plain values on one line (`depth: [10, 30, 50]`)."""


def _sequence(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _sequence)


def status(row: pd.Series) -> str:
    """A cell's outcome (STATUSES) from its `diverged` and `trainable` values."""
    if row.get("diverged") == 1:
        return "diverged"
    trainable = row.get("trainable")
    if trainable is None or (isinstance(trainable, float) and math.isnan(trainable)):
        return "unknown"
    return "trained" if trainable == 1 else "untrainable"


def _td(value: object) -> str:
    """A table cell: 4 significant digits shown, the exact value kept for sorting and on hover."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and math.isnan(value):
        return '<td data-sort=""></td>'
    shown, exact = (f"{value:.4g}", repr(float(value))) if isinstance(value, int | float) else (str(value), str(value))
    return f'<td data-sort="{escape(exact)}" title="{escape(exact)}">{escape(shown)}</td>'


def metric_order(table: pd.DataFrame, axes: list[str], attrs: dict[str, dict]) -> list[str]:
    """The table's metrics: FIRST, then the others by name, costs (wall times, memory) last."""
    def key(name: str) -> tuple[bool, int, str]:
        cost = attrs.get(name, {}).get("units") in COST_UNITS
        return cost, FIRST.index(name) if name in FIRST else len(FIRST), name

    return sorted((c for c in table.columns if c not in axes), key=key)


def _table(table: pd.DataFrame, cells: list[str], axes: list[str], attrs: dict[str, dict],
           logs: dict[str, dict[str, str]]) -> str:
    columns = [*axes, "status", *metric_order(table, axes, attrs)]
    described = descriptions(attrs)
    head = "".join(f'<th title="{escape(described.get(c, STATUS_HELP if c == "status" else c))}">{escape(c)}</th>'
                   for c in columns)
    filters = "".join(f'<th><input placeholder="filter" aria-label="filter {escape(c)}"></th>' for c in columns)
    rows = []
    for cid, (_, row) in zip(cells, table.iterrows(), strict=True):
        outcome = status(row)
        link = f' <a href="#log-{escape(cid)}" class="log-link">log</a>' if cid in logs else ""
        tds = [f'<td data-sort="{outcome}" class="status {outcome}" title="{STATUSES[outcome]}">{outcome}{link}</td>'
               if c == "status" else _td(row[c]) for c in columns]
        rows.append(f'<tr id="cell-{escape(cid)}" class="{outcome}">{"".join(tds)}</tr>')
    return (f'<table id="cells"><thead><tr>{head}</tr><tr class="filters">{filters}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _grid(config: dict, table: pd.DataFrame) -> str:
    """Each grid axis with the values its cells take (explicit `cells:` included)."""
    rows = "".join(f"<tr><th>{escape(axis)}</th><td>{escape(', '.join(map(str, dict.fromkeys(table[axis]))))}</td></tr>"
                   for axis in config["grid"])
    extra = len(config.get("cells") or [])
    note = f" (the grid's product and {extra} <code>cells:</code> entr{'y' if extra == 1 else 'ies'})" if extra else ""
    return f'<table class="grid"><tbody>{rows}</tbody></table><p>{len(table)} cells{note}.</p>'


def _logs(logs: dict[str, dict[str, str]]) -> str:
    parts = []
    for cid, files in logs.items():
        body = "".join(f"<h4>{escape(path)}</h4><pre>{escape(text)}</pre>" for path, text in files.items())
        parts.append(f'<details id="log-{escape(cid)}"><summary>{escape(cid)}</summary>{body}</details>')
    return "".join(parts) or "<p>No cell diverged or stayed untrainable.</p>"


def descriptions(attrs: dict[str, dict]) -> dict[str, str]:
    """Column -> 'long name (units)' from the store variables' attrs."""
    out = {}
    for name, a in attrs.items():
        units = str(a.get("units", "1"))
        out[name] = str(a.get("long_name", name)) + ("" if units in UNITLESS else f" ({units})")
    return out


def read_logs(folder: Path, cells: list[str], lines: int = LOG_LINES) -> dict[str, dict[str, str]]:
    """Each cell's logs (training, measurements) under `folder` (results/<study>/logs), their last `lines` lines."""
    logs = {}
    for cid in cells:
        found = sorted(folder.glob(f"*/{cid}.log"))
        logs[cid] = {str(path): "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) for path in found}
    return {cid: files for cid, files in logs.items() if files}


def study_page(config: dict, table: pd.DataFrame, cells: list[str], attrs: dict[str, dict],
               logs: dict[str, dict[str, str]]) -> str:
    """The page of study `config` (validated, as run) whose cells `cells` have the rows of `table` (one per cell:
    grid axes, then metrics); `attrs` are the metrics' store attrs (long_name, units), `logs` the logs of the cells to
    link (read_logs)."""
    axes = list(config["grid"])
    counts = table.apply(status, axis=1).value_counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    yaml_text = yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)
    style, script = ((ASSETS / f"study_page.{ext}").read_text() for ext in ("css", "js"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(config['study'])}: study</title>
<style>{style}</style></head><body>
<h1>Study <code>{escape(config['study'])}</code></h1>
<p class="counts">{len(table)} cells: {escape(summary)}.</p>
<h2>Grid</h2>{_grid(config, table)}
<h2>Cells</h2>
<p class="hint">Click a column to sort; type in a column's box to filter (text, or a comparison such as
<code>&gt;0.5</code>, <code>&lt;=30</code>). A diverged or untrainable cell links its log.</p>
<p class="shown" id="shown"></p>
<div class="scroll">{_table(table, cells, axes, attrs, logs)}</div>
<h2>Config as run</h2>
<details open><summary>YAML (defaults filled)</summary><pre id="config">{escape(yaml_text)}</pre></details>
<h2>Logs of diverged and untrainable cells</h2>{_logs(logs)}
<script>{script}</script>
</body></html>
"""
