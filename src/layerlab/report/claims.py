"""A study's claims: statements of its paper checked against the study store (results/<study>/claims.csv).

A claim (config `claims:`, layerlab/workflow/schemas/config.schema.yaml) picks one variable of the store at grid values
(`select`); optionally compares it with the same variable at a second selection (`minus`: the grid values that
differ from `select`), seed by seed, by difference or ratio (`compare`, COMPARE); reduces the remaining dims by
named statistics (`reduce: {dim: stat}`, STATS, in the order written); and states `measured op value` (`op`, OPS).
The per-seed values give the mean and its 95% interval (Student's t: mean +- t_{0.975, n-1} s / sqrt(n)), and the
verdict (VERDICTS) asks the whole interval: it holds where every value of the interval satisfies the claim, fails
where none does, and is inconclusive where the interval straddles the threshold; one seed is unreplicated (its
point estimate alone), no finite value is not measurable (the reason in `note`), and a claim marked `scale: paper`
is not at this scale in a quick study (config `scale`).

Checked before any job (check_claims, from layerlab.workflow.validate.check_study): grid axes and values, the metric
against the variables the study produces, the statistics, the op's value. Numpy only at import (the Snakefile
imports this module); xarray and pandas on evaluation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from layerlab.core.config import ConfigError
from layerlab.core.messages import nearest

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

ZERO_ATOL = 1e-6  # |x| at most this counts as zero (frac_zero): a collapsed layer's batch entropy is 0.5 log(1)
SEED = "seed"  # the grid axis the interval is over
COLUMNS = ["name", "source", "paper", "metric", "scale", "measured", "ci_low", "ci_high", "n_seeds", "per_seed", "op",
           "value", "verdict", "note"]


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
Check = Callable[[float, float, Any], bool]
# op -> (every x in [low, high] satisfies `x op value`, no x does); a point estimate is the interval [m, m]
OPS: dict[str, tuple[Check, Check]] = {
    "<=": (lambda lo, hi, v: hi <= v, lambda lo, hi, v: lo > v),
    "<": (lambda lo, hi, v: hi < v, lambda lo, hi, v: lo >= v),
    ">=": (lambda lo, hi, v: lo >= v, lambda lo, hi, v: hi < v),
    ">": (lambda lo, hi, v: lo > v, lambda lo, hi, v: hi <= v),
    "between": (lambda lo, hi, v: v[0] <= lo and hi <= v[1], lambda lo, hi, v: hi < v[0] or lo > v[1]),
}


class Verdict(NamedTuple):
    word: str  # in the summary line: '3 hold, 1 fail, ...'
    mark: str  # in the report's table, in a span of class verdict-<verdict> (failing rows stand out)
    meaning: str


# the first four are always counted in the summary line, the others where there are any
VERDICTS: dict[str, Verdict] = {
    "holds": Verdict("hold", "✓ holds", "the whole 95% interval over seeds satisfies the claim"),
    "fails": Verdict("fail", "✗ FAILS", "the whole 95% interval violates the claim"),
    "inconclusive": Verdict("inconclusive", "? inconclusive",
                            "the 95% interval straddles the threshold: more seeds would decide"),
    "unreplicated": Verdict("unreplicated", "unreplicated", "one seed: the point estimate alone, no interval"),
    "not measurable": Verdict("not measurable", "not measurable", "no finite value (the reason in note)"),
    "not at this scale": Verdict("not at this scale", "not at this scale",
                                 "a claim marked scale: paper, in a quick study"),
}
SCALES = ("quick", "paper")  # a study's `scale`, and the smallest scale a claim can be tested at (`scale:`)


def satisfies(op: str, value: Any, low: float, high: float) -> bool | None:
    """Whether every x in [low, high] satisfies `x op value` (True), none does (False), or some do (None)."""
    every, none = OPS[op]
    return True if every(low, high, value) else False if none(low, high, value) else None


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
    if claim["metric"] not in ds:  # the study produces it (checked before any job): a store collected before it existed
        raise ValueError(f"the study store has no '{claim['metric']}': collected by an older layerlab? "
                         f"snakemake --forcerun collect")
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


def verdict(op: str, value: Any, measured: float, low: float, high: float, n: int) -> tuple[str, str]:
    """The verdict on the mean and 95% interval of n finite per-seed values, and what it adds to the note."""
    if n == 0:
        return "not measurable", "no finite value (missing or diverged cells)"
    if n == 1:
        point = satisfies(op, value, measured, measured)
        return "unreplicated", f"one seed: its value {'satisfies' if point else 'violates'} the claim"
    return {True: "holds", False: "fails", None: "inconclusive"}[satisfies(op, value, low, high)], ""


def evaluate(ds: xr.Dataset, claims: list[dict], scale: str = "quick") -> pd.DataFrame:
    """One row per claim (COLUMNS) of a study run at `scale`. A claim that fails is a row, not an error; so is one
    whose data do not reduce to one value per seed (not measurable, the reason in `note`)."""
    import pandas as pd

    rows = []
    for claim in claims:
        values, notes = np.array([]), []
        try:
            values = per_seed(ds, claim)
        except (ValueError, KeyError) as err:
            notes.append(str(err).strip("'\""))
        measured, low, high, n = interval(values)
        said, why = verdict(claim["op"], claim["value"], measured, low, high, n)
        notes += [why] if why and not notes else []
        if 0 < n < len(values):
            notes.append(f"{len(values) - n} of {len(values)} seeds without a finite value")
        if claim.get("scale", SCALES[0]) == "paper" and scale != "paper":
            said = "not at this scale"
            notes.insert(0, "marked scale: paper, and this is a quick study")
        rows.append({"name": claim["name"], "source": claim.get("source", ""), "paper": claim.get("paper", ""),
                     "metric": claim["metric"], "scale": claim.get("scale", SCALES[0]), "measured": measured,
                     "ci_low": low, "ci_high": high, "n_seeds": n,
                     "per_seed": ";".join(f"{v:.6g}" for v in values), "op": claim["op"], "value": claim["value"],
                     "verdict": said, "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=COLUMNS)


def summary_line(verdicts: Any) -> str:
    """'41 hold, 3 fail, 6 inconclusive, 0 unreplicated of 50' (the other verdicts where there are any)."""
    counts = {v: 0 for v in VERDICTS} | dict(zip(*np.unique(np.asarray(verdicts, dtype=str), return_counts=True),
                                                 strict=True))
    parts = [f"{counts[v]} {spec.word}" for i, (v, spec) in enumerate(VERDICTS.items()) if i < 4 or counts[v]]
    return f"{', '.join(parts)} of {len(verdicts)}"


def threshold(op: str, value: Any) -> str:
    """The claim's side of the comparison, e.g. '>= 0.5' or 'in [0.37, 0.47]'."""
    return f"in [{value[0]:g}, {value[1]:g}]" if op == "between" else f"{op} {value:g}"


def interval_text(low: float, high: float, n: int) -> str:
    """The 95% interval, or why there is none."""
    if n >= 2:
        return f"{low:.4g} .. {high:.4g}"
    return "none: one seed" if n == 1 else "none: no value"


def to_rst(table: pd.DataFrame, study: str) -> str:
    """The report's opening section: the verdict counts, then one row per claim."""
    head = f"Claims: {summary_line(table['verdict'])}" if len(table) else "Claims: none declared"
    lines = [head, "=" * len(head), ""]
    if not len(table):
        return "\n".join([*lines, f"Study {study} declares no ``claims:``.", ""])

    def cell(x: Any) -> str:
        if isinstance(x, float):
            return "" if math.isnan(x) else f"{x:.4g}"
        return str(x).replace("\n", " ") or " "

    roles = {v: f"verdict-{v.replace(' ', '-')}" for v in VERDICTS}  # a class per verdict for the page's style
    lines += [f".. role:: {role}" for role in roles.values()] + [""]
    lines += [f"Each claim of study {study}'s paper, measured here: the mean over seeds and its 95% Student-t "
              "interval. A claim holds where the whole interval satisfies it, fails where the whole interval violates "
              "it, and is inconclusive where the interval straddles the threshold (more seeds would decide); with one "
              "seed it is unreplicated.", "", ".. list-table::", "   :header-rows: 1", ""]
    header = ["verdict", "name", "source", "paper", "metric", "claim", "measured", "95% interval", "seeds", "note"]
    rows = [[f":{roles[r.verdict]}:`{VERDICTS[r.verdict].mark}`", f"**{r.name}**" if r.verdict == "fails" else r.name,
             r.source, r.paper, r.metric, threshold(r.op, r.value), r.measured,
             interval_text(r.ci_low, r.ci_high, r.n_seeds), r.n_seeds, r.note]
            for r in table.itertuples(index=False)]
    for values in [header, *rows]:
        lines += [f"   {'*' if i == 0 else ' '} - {cell(v)}" for i, v in enumerate(values)]
    return "\n".join([*lines, ""])


def read_table(path: Path) -> pd.DataFrame:
    """A study's claims.csv (`path`: the file or its results/<study> folder) with `value` and `per_seed` parsed and
    the study's name and folder added."""
    import json

    import pandas as pd

    csv = path if path.suffix == ".csv" else path / "claims.csv"
    if not csv.exists():
        raise SystemExit(f"{csv}: no such file (run the study first)")
    text = ("source", "paper", "per_seed", "note")
    table = pd.read_csv(csv, keep_default_na=False, na_values=[""], dtype=dict.fromkeys(text, str))
    if "verdict" not in table:
        raise SystemExit(f"{csv}: written before claims had verdicts: rerun the study's snakemake to update it")
    table[list(text)] = table[list(text)].fillna("")
    table["value"] = [json.loads(v) if isinstance(v, str) else v for v in table["value"]]
    table["per_seed"] = [[float(x) for x in v.split(";")] if v else [] for v in table["per_seed"]]
    return table.assign(study=csv.parent.name, folder=csv.parent)


def main(argv: list[str] | None = None) -> None:
    """`python -m layerlab.claims results/A [results/B ...] [--html results/claims.html]`: one table of every study's
    claims.csv (threshold, measured mean, 95% interval, verdict) and the verdict counts; --html also writes the
    reproduction report, every claim on one page grouped by paper."""
    import argparse

    import pandas as pd

    parser = argparse.ArgumentParser(prog="python -m layerlab.claims", description=main.__doc__)
    parser.add_argument("studies", nargs="+", type=Path, help="results/<study> folders (or their claims.csv)")
    parser.add_argument("--html", type=Path, help="write the one-page reproduction report here")
    args = parser.parse_args(argv)
    table = pd.concat([read_table(path) for path in args.studies], ignore_index=True)
    shown = pd.DataFrame({
        "study": table["study"], "claim": table["name"],
        "threshold": [threshold(op, v) for op, v in zip(table["op"], table["value"], strict=True)],
        "measured": [f"{m:.4g}" for m in table["measured"]],
        "95% interval": [interval_text(*r) for r in zip(table["ci_low"], table["ci_high"], table["n_seeds"],
                                                       strict=True)],
        "seeds": table["n_seeds"], "verdict": table["verdict"]})
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 60, "display.width", 200):
        print(shown.to_string(index=False))
    print(f"\n{summary_line(table['verdict'])} claims ({table['study'].nunique()} studies)")
    if args.html:
        from layerlab.report.claims_page import write_page

        write_page(table, args.html)
        print(f"wrote {args.html}")
