"""A study's claims: statements of its paper checked against the study store (results/<study>/claims.csv).

A claim (config `claims:`, layerlab/workflow/schemas/config.schema.yaml) picks one variable of the store at grid values
(`select`); optionally compares it with the same variable at a second selection (`minus`: the grid values that
differ from `select`), seed by seed, by difference or ratio (`compare`, COMPARE); reduces the remaining dims by
named statistics (`reduce: {dim: stat}`, STATS, in the order written); and compares the mean over seeds with
`value` (`op`). With several seeds the 95% interval is Student's t over the per-seed values
(mean +- t_{0.975, n-1} s / sqrt(n)); with one seed it is NaN. The check is `measured op value` on the mean; a
claim whose data are missing (NaN) does not hold.

Checked before any job (check_claims, from layerlab.workflow.validate.check_study): grid axes and values, the metric
against the variables the study produces, the statistics, the op's value. Numpy only at import (the Snakefile
imports this module); xarray and pandas on evaluation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from layerlab.core.config import ConfigError
from layerlab.core.messages import nearest

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

ZERO_ATOL = 1e-6  # |x| at most this counts as zero (frac_zero): a collapsed layer's batch entropy is 0.5 log(1)
SEED = "seed"  # the grid axis the interval is over
COLUMNS = ["name", "source", "paper", "metric", "measured", "ci_low", "ci_high", "n_seeds", "op", "value", "holds",
           "note"]


def _finite_index(x: np.ndarray, last: bool) -> np.ndarray:
    """Index along the last axis of the first (last) finite entry; 0 where there is none."""
    ok = np.isfinite(x)
    idx = (x.shape[-1] - 1 - np.argmax(ok[..., ::-1], axis=-1)) if last else np.argmax(ok, axis=-1)
    return idx


def _pick(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


def _edge(last: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda x, coord: _pick(x, _finite_index(x, last))


def _arg(fn: Callable) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The coordinate where `fn` (nanargmax/nanargmin) is reached; NaN where all are NaN."""
    def stat(x: np.ndarray, coord: np.ndarray) -> np.ndarray:
        empty = ~np.isfinite(x).any(axis=-1)
        idx = fn(np.where(empty[..., None], 0.0, x), axis=-1)
        return np.where(empty, np.nan, np.asarray(coord, dtype=float)[idx])
    return stat


def _frac(test: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The fraction of the finite entries that pass `test` (NaN entries, e.g. layers a shallower cell lacks, are
    not counted)."""
    def stat(x: np.ndarray, coord: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (test(np.where(ok, x, np.nan)) & ok).sum(axis=-1) / ok.sum(axis=-1)
    return stat


def _nan(fn: Callable) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def stat(x: np.ndarray, coord: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # all-NaN slices give NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn(x, axis=-1)
    return stat


# statistic -> (reduction over the last axis of values x with coordinates coord, description). NaN-aware.
STATS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str]] = {
    "first": (_edge(last=False), "first finite value"),
    "last": (_edge(last=True), "last finite value (e.g. the last step, the deepest layer)"),
    "change": (lambda x, coord: _edge(True)(x, coord) - _edge(False)(x, coord), "last minus first finite value"),
    "mean": (_nan(np.nanmean), "mean"),
    "median": (_nan(np.nanmedian), "median"),
    "min": (_nan(np.nanmin), "minimum"),
    "max": (_nan(np.nanmax), "maximum"),
    "sum": (_nan(np.nansum), "sum"),
    "frac_zero": (_frac(lambda x: np.abs(x) <= ZERO_ATOL), f"fraction with |x| <= {ZERO_ATOL:g}"),
    "frac_positive": (_frac(lambda x: x > 0), "fraction > 0"),
    "argmax": (_arg(np.nanargmax), "coordinate of the maximum"),
    "argmin": (_arg(np.nanargmin), "coordinate of the minimum"),
}
# how `minus` compares the two selections, per seed (`compare:`, default difference)
COMPARE: dict[str, Callable[[Any, Any], Any]] = {"difference": lambda a, b: a - b, "ratio": lambda a, b: a / b}
OPS: dict[str, Callable[[float, Any], bool]] = {
    "<=": lambda m, v: m <= v,
    ">=": lambda m, v: m >= v,
    "<": lambda m, v: m < v,
    ">": lambda m, v: m > v,
    "between": lambda m, v: v[0] <= m <= v[1],
}


# --- checked before any job -----------------------------------------------------------------------------------------

def claim_problems(claim: dict, axes: dict[str, list], variables: set[str], store_dims: set[str]) -> list[str]:
    """What is wrong with one (schema-valid) claim; `axes` maps each grid axis to the values the cells take."""
    problems = []
    if claim["metric"] not in variables:
        name = claim["metric"]
        problems.append(f"metric: the study produces no variable '{name}'{nearest(name, variables)}")
    for part in ("select", "minus"):
        for axis, value in claim.get(part, {}).items():
            if axis in axes:
                if value not in axes[axis]:
                    problems.append(f"{part}: {axis} {value!r} is not in the grid (values {axes[axis]})")
            elif axis not in store_dims:
                problems.append(f"{part}: '{axis}' is not a grid axis ({', '.join(axes)}){nearest(axis, axes)}")
    for dim, stat in claim.get("reduce", {}).items():
        if stat not in STATS:
            problems.append(f"reduce: {dim}: unknown statistic '{stat}' (one of {', '.join(STATS)})"
                            f"{nearest(stat, STATS)}")
        if dim == SEED:
            problems.append("reduce: seed is reduced by the claim itself (mean and 95% interval over seeds)")
        elif dim not in axes and dim not in store_dims:
            problems.append(f"reduce: '{dim}' is neither a grid axis nor a dim of the store"
                            f"{nearest(dim, [*axes, *store_dims])}")
    chosen = {*claim.get("select", {}), *claim.get("reduce", {}), SEED}
    open_axes = [a for a, values in axes.items() if a not in chosen and len(values) > 1]
    if open_axes and not problems:  # a misspelt axis would show up twice
        problems.append(f"select: grid axes {open_axes} take several values: fix them in `select` or reduce them in "
                        f"`reduce` (only seeds are left open)")
    if "compare" in claim:
        if claim["compare"] not in COMPARE:
            problems.append(f"compare: {claim['compare']!r} is not one of {list(COMPARE)}"
                            f"{nearest(claim['compare'], COMPARE)}")
        elif not claim.get("minus"):
            problems.append("compare: needs `minus:`, the second selection")
    two_sided = claim["op"] == "between"
    if two_sided != isinstance(claim["value"], list):
        problems.append(f"value: {claim['value']!r}: op {claim['op']!r} takes "
                        f"{'[low, high]' if two_sided else 'one number'}")
    elif two_sided and not claim["value"][0] <= claim["value"][1]:
        problems.append(f"value: {claim['value']!r}: low > high")
    return problems


def check_claims(config: dict, axes: dict[str, list], variables: set[str], store_dims: set[str]) -> None:
    """Raise ConfigError naming each bad claim (`claims[i] (name)`) of a validated `config`."""
    names = [c["name"] for c in config.get("claims", [])]
    problems = []
    for i, claim in enumerate(config.get("claims", [])):
        where = f"claims[{i}] ({claim['name']})"
        problems += [f"{where}: {p}" for p in claim_problems(claim, axes, variables, store_dims)]
        if names.count(claim["name"]) > 1:
            problems.append(f"{where}: another claim has the name '{claim['name']}'")
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


# --- evaluated on the study store -----------------------------------------------------------------------------------

def _select(da: xr.DataArray, select: dict) -> xr.DataArray:
    return da.sel({k: v for k, v in select.items() if k in da.dims}).drop_vars(list(select), errors="ignore")


def _reduce(da: xr.DataArray, reduce: dict[str, str]) -> xr.DataArray:
    import xarray as xr

    for dim, stat in reduce.items():
        if dim not in da.dims:
            raise ValueError(f"reduce: '{dim}' is not a dim of the variable (dims: {', '.join(map(str, da.dims))})")
        fn = STATS[stat][0]
        coord = da[dim].values
        da = xr.apply_ufunc(lambda x, fn=fn, coord=coord: fn(x, coord), da.astype(float), input_core_dims=[[dim]])
    return da


def per_seed(ds: xr.Dataset, claim: dict) -> np.ndarray:
    """The claim's measured value per seed (one value where the store has no seed axis)."""
    da = _reduce(_select(ds[claim["metric"]], claim.get("select", {})), claim.get("reduce", {}))
    if claim.get("minus"):
        other = _reduce(_select(ds[claim["metric"]], {**claim.get("select", {}), **claim["minus"]}),
                        claim.get("reduce", {}))
        da = COMPARE[claim.get("compare", "difference")](da, other)
    da = da.squeeze([d for d in da.dims if d != SEED and da.sizes[d] == 1], drop=True)  # grid axes of one value
    left = [d for d in da.dims if d != SEED]
    if left:
        raise ValueError(f"dims {left} are left: reduce them (`reduce: {{{left[0]}: last}}`) or select a value")
    return np.atleast_1d(da.values.astype(float))


def interval(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean, 95% Student-t interval and count of the finite per-seed values (NaN interval below two)."""
    from scipy import stats

    x = values[np.isfinite(values)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half, len(x)


def evaluate(ds: xr.Dataset, claims: list[dict]) -> pd.DataFrame:
    """One row per claim (COLUMNS). A claim that does not hold is a row with holds False, not an error; so is one
    whose data do not reduce to one value per seed (the reason in `note`)."""
    import pandas as pd

    rows = []
    for claim in claims:
        note = ""
        try:
            measured, low, high, n = interval(per_seed(ds, claim))
        except (ValueError, KeyError) as err:
            measured, low, high, n, note = math.nan, math.nan, math.nan, 0, str(err).strip("'\"")
        holds = bool(math.isfinite(measured) and OPS[claim["op"]](measured, claim["value"]))
        if not note and not math.isfinite(measured):
            note = "no finite value (missing or diverged cells)"
        rows.append({"name": claim["name"], "source": claim.get("source", ""), "paper": claim.get("paper", ""),
                     "metric": claim["metric"], "measured": measured, "ci_low": low, "ci_high": high,
                     "n_seeds": n, "op": claim["op"], "value": claim["value"], "holds": holds, "note": note})
    return pd.DataFrame(rows, columns=COLUMNS)


def summary_line(table: pd.DataFrame) -> str:
    return f"{int(table['holds'].sum())} of {len(table)} claims hold"


def to_rst(table: pd.DataFrame, study: str) -> str:
    """The report's opening section: 'k of n claims hold', then one row per claim."""
    head = f"Claims: {summary_line(table)}" if len(table) else "Claims: none declared"
    lines = [head, "=" * len(head), ""]
    if not len(table):
        return "\n".join([*lines, f"Study {study} declares no ``claims:``.", ""])

    def cell(x: Any) -> str:
        if isinstance(x, bool | np.bool_):
            return "yes" if x else "**no**"
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:.4g}"
        return str(x).replace("\n", " ") or " "

    lines += [f"Each claim of study {study}'s paper, measured here (mean over seeds; 95% Student-t interval where "
              "there are several).", "", ".. list-table::", "   :header-rows: 1", ""]
    cols = ["holds", "name", "source", "paper", "metric", "measured", "ci_low", "ci_high", "op", "value", "note"]
    for values in [cols, *table[cols].itertuples(index=False)]:
        lines += [f"   {'*' if i == 0 else ' '} - {cell(v)}" for i, v in enumerate(values)]
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> None:
    """`python -m layerlab.claims results/A [results/B ...]`: one table of every study's claims.csv."""
    import argparse
    from pathlib import Path

    import pandas as pd

    parser = argparse.ArgumentParser(prog="python -m layerlab.claims", description=main.__doc__)
    parser.add_argument("studies", nargs="+", type=Path, help="results/<study> folders (or their claims.csv)")
    args = parser.parse_args(argv)
    tables = []
    for path in args.studies:
        csv = path if path.suffix == ".csv" else path / "claims.csv"
        if not csv.exists():
            raise SystemExit(f"{csv}: no such file (run the study first)")
        tables.append(pd.read_csv(csv, keep_default_na=False, na_values=[""]).assign(study=csv.parent.name))
    table = pd.concat(tables, ignore_index=True).rename(columns={"name": "claim"})
    table["holds"] = table["holds"].map({True: "yes", False: "NO"})
    cols = ["study", "claim", "paper", "measured", "holds"]
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 60, "display.width", 200):
        print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"\n{summary_line(table.assign(holds=table['holds'] == 'yes'))} ({len(tables)} studies)")
