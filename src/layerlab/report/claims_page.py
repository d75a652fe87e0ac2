"""The reproduction report: every study's claims on one self-contained HTML page (`make claims` writes
results/claims.html; `python -m layerlab.claims --html OUT results/<study> ...`).

Claims are grouped by the paper their `source` names ("paper 003, Sec. 2.2"); each row has the paper's statement and
number, the claim's threshold, the measured mean with its 95% interval, the per-seed values as dots on a small strip
plot (with the interval, the mean and the region that satisfies the claim), the verdict, the note, and a link to the
study's report (results/<study>/report.html; its claims.csv where the report was not built). No scripts, no assets.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerlab.report.claims import VERDICTS, interval_text, summary_line, threshold

if TYPE_CHECKING:
    import pandas as pd

COLOURS = {"holds": "#1a7f37", "fails": "#cf222e", "inconclusive": "#9a6700", "unreplicated": "#0969da",
           "not measurable": "#6e7781", "not at this scale": "#8250df"}  # one per verdict (VERDICTS)
WIDTH, HEIGHT, MARGIN = 180, 30, 6  # the strip plot, px
CSS = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #1f2328; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin: 1.6em 0 0.4em; }
p.summary { font-size: 1.1em; margin: 0.3em 0 1em; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border-bottom: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.measured, td.interval, td.seeds { font-variant-numeric: tabular-nums; }
td.claim code { font-size: 0.9em; } td .source { color: #57606a; font-size: 0.85em; display: block; }
td.note { color: #57606a; font-size: 0.9em; }
col.study { width: 9em; } col.claim { width: 13em; } col.paper { width: auto; } col.threshold { width: 7.5em; }
col.measured { width: 6.5em; } col.interval { width: 10em; } col.seeds { width: 4em; } col.strip { width: 196px; }
col.verdict { width: 10em; } col.note { width: 13em; }
td { overflow-wrap: break-word; }
.verdict { font-weight: 600; white-space: nowrap; padding: 1px 6px; border-radius: 8px; color: #fff; }
tr.fails { background: #ffebe9; } tr.inconclusive { background: #fff8c5; }
dl.legend { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 0.9em; }
dl.legend dd { margin: 0; }
"""


def _slug(verdict: str) -> str:
    return verdict.replace(" ", "-")


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def strip_plot(row: Any) -> str:
    """An inline SVG: the per-seed values as dots, their 95% interval as a bar with the mean as a tick, the
    threshold as dashed lines and the region that satisfies the claim shaded."""
    bounds = list(row.value) if row.op == "between" else [row.value]
    seeds = _finite(row.per_seed)
    ends = _finite([row.ci_low, row.ci_high, row.measured])
    lo, hi = min([*seeds, *ends, *bounds]), max([*seeds, *ends, *bounds])
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 1e-3)
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return MARGIN + (min(max(v, lo), hi) - lo) / (hi - lo) * (WIDTH - 2 * MARGIN)

    mid, colour = HEIGHT / 2, COLOURS[row.verdict]
    ok = {"<=": (lo, bounds[0]), "<": (lo, bounds[0]), ">=": (bounds[0], hi), ">": (bounds[0], hi),
          "between": (bounds[0], bounds[-1])}[row.op]
    parts = [f'<rect x="{x(ok[0]):.1f}" y="2" width="{x(ok[1]) - x(ok[0]):.1f}" height="{HEIGHT - 4}" '
             f'fill="#dafbe1"><title>satisfies the claim ({html.escape(threshold(row.op, row.value))})</title></rect>']
    parts += [f'<line x1="{x(b):.1f}" x2="{x(b):.1f}" y1="2" y2="{HEIGHT - 2}" stroke="#1a7f37" '
              f'stroke-dasharray="3,2"/>' for b in bounds]
    if len(ends) == 3:
        parts.append(f'<line x1="{x(row.ci_low):.1f}" x2="{x(row.ci_high):.1f}" y1="{mid}" y2="{mid}" '
                     f'stroke="#57606a" stroke-width="3" opacity="0.6"><title>95% interval '
                     f'{html.escape(interval_text(row.ci_low, row.ci_high, row.n_seeds))}</title></line>')
    if math.isfinite(row.measured):
        parts.append(f'<line x1="{x(row.measured):.1f}" x2="{x(row.measured):.1f}" y1="{mid - 7}" y2="{mid + 7}" '
                     f'stroke="#1f2328" stroke-width="2"><title>mean {row.measured:.4g}</title></line>')
    parts += [f'<circle class="seed" cx="{x(v):.1f}" cy="{mid + (i % 3 - 1) * 5}" r="3" fill="{colour}" '
              f'fill-opacity="0.75"><title>seed value {v:.4g}</title></circle>' for i, v in enumerate(seeds)]
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="per-seed values">{"".join(parts)}</svg>')


def paper_of(source: str) -> str:
    """'paper 003' from a claim's source ('paper 003, Sec. 2.2, Table 1'); 'other' where it names none."""
    found = re.search(r"paper\s+(\d+)", source or "", re.IGNORECASE)
    return f"paper {found.group(1)}" if found else "other"


def _study_link(folder: Path, study: str, page_dir: Path) -> str:
    report = folder / "report.html"
    target, title = (report, "the study's report") if report.exists() else (folder / "claims.csv", (
        "no report.html yet (snakemake --configfile <study config> --report results/<study>/report.html); "
        "its claims.csv"))
    href = Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix()
    return f'<a href="{html.escape(href)}" title="{html.escape(title)}">{breakable(study)}</a>'


def breakable(name: str) -> str:
    """`name` escaped, a narrow column free to wrap it after each underscore (not inside a word)."""
    return html.escape(name).replace("_", "_<wbr>")


def _row(r: Any, page_dir: Path) -> str:
    measured = "" if not math.isfinite(r.measured) else f"{r.measured:.4g}"
    cells = [
        _study_link(Path(r.folder), r.study, page_dir),
        f'<code>{breakable(r.name)}</code><span class="source">{html.escape(r.source)}</span>',
        html.escape(r.paper),
        html.escape(threshold(r.op, r.value)),
        measured,
        html.escape(interval_text(r.ci_low, r.ci_high, r.n_seeds)),
        str(r.n_seeds),
        strip_plot(r),
        f'<span class="verdict" style="background:{COLOURS[r.verdict]}">{html.escape(r.verdict)}</span>',
        html.escape(r.note),
    ]
    tds = "".join(f'<td class="{k}">{c}</td>' for (k, _), c in zip(COLUMNS, cells, strict=True))
    return f'<tr class="{_slug(r.verdict)}" data-verdict="{html.escape(r.verdict)}">{tds}</tr>'


# (column class, header)
COLUMNS = [("study", "study"), ("claim", "claim"), ("paper", "the paper says"), ("threshold", "threshold"),
           ("measured", "measured"), ("interval", "95% interval"), ("seeds", "seeds"), ("strip", "per-seed values"),
           ("verdict", "verdict"), ("note", "note")]


def claims_page(table: pd.DataFrame, page_dir: Path) -> str:
    """The page for `table` (layerlab.report.claims.read_table's rows of several studies); links are relative to
    `page_dir`, the folder the page is written to."""
    table = table.assign(group=[paper_of(s) for s in table["source"]])
    cols = "<colgroup>" + "".join(f'<col class="{k}">' for k, _ in COLUMNS) + "</colgroup>"
    sections = []
    for group in sorted(table["group"].unique(), key=lambda g: (g == "other", g)):
        rows = table[table["group"] == group]
        studies = ", ".join(dict.fromkeys(rows["study"]))
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS)
        body = "".join(_row(r, page_dir) for r in rows.itertuples(index=False))
        sections.append(f'<section id="{_slug(group)}"><h2>{html.escape(group.capitalize())}: '
                        f'{html.escape(summary_line(rows["verdict"]))} ({html.escape(studies)})</h2>'
                        f'<table>{cols}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>')
    legend = "".join(f'<dt><span class="verdict" style="background:{COLOURS[v]}">{html.escape(v)}</span></dt>'
                     f"<dd>{html.escape(spec.meaning)}</dd>" for v, spec in VERDICTS.items())
    n_studies = table["study"].nunique()
    studies = f"{n_studies} stud{'y' if n_studies == 1 else 'ies'}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>layerlab: the papers' claims, reproduced</title>
<style>{CSS}</style></head><body>
<h1>The papers' claims, reproduced</h1>
<p class="summary">{html.escape(summary_line(table["verdict"]))} claims, {studies}.</p>
<p>Each claim is measured on its study's store: the mean over seeds and its 95% Student-t interval. Strip plots: one
dot per seed, the grey bar is the interval, the black tick the mean, the green region satisfies the claim (dashed:
its threshold).</p>
<dl class="legend">{legend}</dl>
{"".join(sections)}
</body></html>
"""


def write_page(table: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(claims_page(table, out.parent))
