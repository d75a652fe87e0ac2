"""Compare two studies cell by cell: `python -m layerlab.compare results/A results/B [--metric test_acc ...]`.

The cells both studies have (the shared grid axes at the values both take; an axis only one study has must take a
single value there) are matched, and each per-cell scalar both stores hold is differenced, B minus A, seed by seed
where both have the seed; the table has the mean difference and its 95% Student-t interval over seeds
(layerlab.report.claims.interval). By default the results only: costs (wall times, memory: COST_UNITS, the machine's
more than the method's), metrics equal in every shared cell (named in one line) and cells without a value in either
study are left out. Writes compare.csv and compare.png (one panel per metric, a point with its interval per cell) to
--out (default results/compare/<A>_vs_<B>) and prints the table and the parameters the cells differ in.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from layerlab.core.store import read_store
from layerlab.report.claims import SEED, interval

SKIP = {"config"}
COST_UNITS = {"s", "B"}  # wall times and memory: compared by default only when asked for (--metric)
PANELS_PER_ROW = 3


def study_axes(ds: xr.Dataset) -> list[str]:
    return json.loads(ds.attrs["axes"]) if "axes" in ds.attrs else [str(d) for d in ds.dims if d in ds.coords]


def _squeeze_own_axes(ds: xr.Dataset, own: list[str], name: str) -> xr.Dataset:
    for axis in own:
        if ds.sizes[axis] > 1:
            raise ValueError(f"grid axis '{axis}' is only in {name}, with several values "
                             f"{ds[axis].values.tolist()}: the cells cannot be matched")
    return ds.isel({a: 0 for a in own}, drop=True)


def matched(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str] = ("A", "B")) -> tuple[xr.Dataset, xr.Dataset]:
    """Both stores at their shared cells: shared grid axes at the values both take."""
    axes_a, axes_b = study_axes(a), study_axes(b)
    a = _squeeze_own_axes(a, [x for x in axes_a if x not in axes_b], names[0])
    b = _squeeze_own_axes(b, [x for x in axes_b if x not in axes_a], names[1])
    shared = [x for x in axes_a if x in axes_b]
    common = {x: [v for v in a[x].values.tolist() if v in set(b[x].values.tolist())] for x in shared}
    empty = [x for x, v in common.items() if not v]
    if empty:
        raise ValueError(f"no shared cells: grid axis '{empty[0]}' takes different values "
                         f"({a[empty[0]].values.tolist()} vs {b[empty[0]].values.tolist()})")
    return a.sel(common), b.sel(common)


def differing_parameters(a: xr.Dataset, b: xr.Dataset) -> dict[str, tuple]:
    """Cell parameters that differ between the first existing cell of each (matched) store."""
    def first(ds: xr.Dataset) -> dict:
        values = [v for v in np.ravel(ds["config"].values) if isinstance(v, str)]
        return json.loads(values[0]) if values else {}

    ca, cb = first(a), first(b)
    return {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)}


def _mean(x: np.ndarray) -> float:
    """The mean of the finite values; NaN (quietly) where there are none."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def default_metrics(a: xr.Dataset, b: xr.Dataset, available: set[str]) -> dict[str, list[str]]:
    """Every shared per-cell scalar but the costs (COST_UNITS), as {"compared": [...], "equal": [...] (equal in every
    shared cell), "empty": [...] (no value in either study)}."""
    results = sorted(m for m in available if a[m].attrs.get("units", b[m].attrs.get("units")) not in COST_UNITS)
    empty = [m for m in results if not (np.isfinite(a[m].astype(float)).any() or np.isfinite(b[m].astype(float)).any())]
    equal = [m for m in results if m not in empty and a[m].astype(float).equals(b[m].astype(float))]
    return {"compared": [m for m in results if m not in equal + empty], "equal": equal, "empty": empty}


def compare(a: xr.Dataset, b: xr.Dataset, metrics: list[str] | None = None,
            names: tuple[str, str] = ("A", "B")) -> pd.DataFrame:
    """One row per shared cell (without seed) and metric: A's and B's means over seeds, the mean of B - A over the
    seeds both have, its 95% t-interval and the seed count. Without `metrics`: default_metrics, and only cells with
    a value in both studies; `attrs` names the metrics left out ("equal", "empty")."""
    a, b = matched(a, b, names)
    cell_dims = [d for d in study_axes(a) if d in a.dims and d in b.dims]

    def scalars(ds: xr.Dataset) -> set[str]:
        return {str(k) for k, v in ds.data_vars.items() if set(v.dims) <= set(cell_dims) and k not in SKIP
                and v.dtype.kind in "fiub"}

    available = scalars(a) & scalars(b)
    picked = {"compared": metrics, "equal": [], "empty": []} if metrics else default_metrics(a, b, available)
    chosen = picked["compared"]
    missing = [m for m in chosen if m not in available]
    if missing:
        raise ValueError(f"metric {missing[0]!r} is not a per-cell variable of both studies "
                         f"(shared: {', '.join(sorted(available))})")
    groups = [d for d in cell_dims if d != SEED]
    rows = []
    def cells(da: xr.DataArray) -> xr.DataArray:  # (cell, [seed]): one row per shared cell
        return da.stack(_cell=groups) if groups else da.expand_dims(_cell=[()])

    for metric in chosen:
        va, vb = (cells(ds[metric].astype(float)) for ds in (a, b))
        diff = vb - va
        for i, key in enumerate(diff["_cell"].values):
            mean, low, high, n = interval(np.ravel(diff.isel(_cell=i).values))
            rows.append({**dict(zip(groups, key if isinstance(key, tuple) else (key,), strict=False)),
                         "metric": metric, names[0]: _mean(va.isel(_cell=i).values),
                         names[1]: _mean(vb.isel(_cell=i).values),
                         "diff": mean, "ci_low": low, "ci_high": high, "n_seeds": n})
    table = pd.DataFrame(rows)
    if not metrics and len(table):
        table = table[table[list(names)].notna().all(axis=1)].reset_index(drop=True)
    table.attrs.update(equal=picked["equal"], empty=picked["empty"])
    return table


def figure(table: pd.DataFrame, path: Path, names: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"])) if len(table) else ["(none)"]
    groups = [c for c in table.columns if c not in {"metric", *names, "diff", "ci_low", "ci_high", "n_seeds"}]
    ncols = min(PANELS_PER_ROW, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = max(3.2, 0.45 * len(table) / len(metrics) + 1.5)  # room for the cells' labels
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        part = table[table["metric"] == metric].reset_index(drop=True)
        labels = [", ".join(f"{g}={r[g]}" for g in groups) or "all" for _, r in part.iterrows()]
        err = np.array([part["diff"] - part["ci_low"], part["ci_high"] - part["diff"]])
        ax.errorbar(range(len(part)), part["diff"], yerr=np.nan_to_num(err), fmt="o", capsize=3)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(part)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel(f"{names[1]} - {names[0]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerlab.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="results/<study A> (or its metrics.zarr)")
    parser.add_argument("b", type=Path, help="results/<study B>")
    parser.add_argument("--metric", action="append", help="per-cell variable (repeatable; default: every shared "
                        "result, not the wall times and memory)")
    parser.add_argument("--out", type=Path, help="folder for compare.csv and compare.png")
    args = parser.parse_args(argv)
    stores = [p if p.name == "metrics.zarr" else p / "metrics.zarr" for p in (args.a, args.b)]
    for path in stores:
        if not path.exists():
            raise SystemExit(f"{path}: no such store (run the study first)")
    names = (stores[0].parent.name, stores[1].parent.name)
    if names[0] == names[1]:
        names = ("A", "B")
    a, b = (read_store(p) for p in stores)
    try:
        table = compare(a, b, args.metric, names)
        changed = differing_parameters(*matched(a, b, names))
    except ValueError as err:
        raise SystemExit(f"layerlab.report.compare: {err}") from None
    out = args.out or Path("results/compare") / f"{names[0]}_vs_{names[1]}"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False, float_format="%.6g")
    if len(table):
        figure(table, out / "compare.png", names)
    print("cells differ in: " + (", ".join(f"{k} {va!r} -> {vb!r}" for k, (va, vb) in changed.items()) or "nothing"))
    if len(table):
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for group, words in (("equal", "equal in every shared cell"), ("empty", "no value in either study")):
        if table.attrs[group]:
            print(f"{words}: {', '.join(table.attrs[group])}")
    print(f"wrote {out / 'compare.csv'}" + (f" and {out / 'compare.png'}" if len(table) else
                                            " (no result differs: no figure)"))
