"""Study config -> ablation cells.

A study declares `grid` (axes whose product gives the cells), `fixed` (parameters shared by all cells) and
optional explicit `cells`. An explicit cell names a value for every grid axis; if that cell is in the grid
its other keys override the grid cell's, otherwise it is added. A list of values for a grid axis in an explicit
cell makes it a sub-grid: one explicit cell per combination (e.g. other learning rates for another dataset).
A cell's id is the readable path `axis~value/axis~value/...` over the grid axes; its parameters travel to every
rule as one canonical JSON string, so that a changed cell reruns alone. A cell is given once: a grid value listed
twice, or two explicit entries for the same cell, are refused (which would win is not obvious).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable
from typing import Any

# A store's Snakemake output is its root metadata file (workflow/rules/common.smk `zarr_store`, layerlab.core.store): a
# directory() output would be deleted before its job ran and get a `.snakemake_timestamp` that zarr warns about.
STORE_FILE = "zarr.json"
CELL_ID_PATTERN = r"[A-Za-z0-9_]+~[^/]+(?:/[A-Za-z0-9_]+~[^/]+)*"
# the longest file name layerlab makes from a name (the study's folder, a part `axis~value` of a cell id): most file
# systems allow 255 bytes, and a cell's log file adds `.log` to its last part
NAME_MAX = 250


class ConfigError(ValueError):
    """A study config that cannot be turned into cells; the message names the offending key."""


def format_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", text):
        raise ConfigError(f"grid value {value!r} cannot be part of a cell id (use letters, digits, _ . + -)")
    return text


def cell_id(cell: dict, axes: list[str]) -> str:
    parts = [f"{axis}~{format_value(cell[axis])}" for axis in axes]
    if long := [p for p in parts if len(p.encode()) > NAME_MAX]:
        raise ConfigError(f"cell id part '{long[0][:40]}...' is {len(long[0].encode())} bytes long, too long for a "
                          f"folder name (at most {NAME_MAX}): use a shorter grid value")
    return "/".join(parts)


def expand_cells(config: dict, origins: dict[str, str] | None = None) -> dict[str, dict]:
    """Cell id -> cell parameters (fixed merged with the grid point and any explicit override); `origins`, if
    given, receives cell id -> 'cells[i]' for the cells an explicit entry adds or overrides."""
    grid: dict[str, list] = config["grid"]
    axes = list(grid)
    fixed = config.get("fixed", {})
    if overlap := sorted(set(axes) & set(fixed)):
        raise ConfigError(f"key(s) {overlap} appear both in 'grid' and in 'fixed'")
    for axis, values in grid.items():
        seen: set[str] = set()
        for value in values:
            if format_value(value) in seen:
                raise ConfigError(f"grid.{axis}: {value!r} is listed twice (each value gives one cell)")
            seen.add(format_value(value))
    cells = {}
    for point in itertools.product(*grid.values()):
        cell = {**fixed, **dict(zip(axes, point, strict=True))}
        cells[cell_id(cell, axes)] = cell
    given: dict[str, tuple[int, dict]] = {}  # cell id -> the explicit entry that gives it
    for i, entry in enumerate(config.get("cells", [])):
        if missing := [a for a in axes if a not in entry]:
            raise ConfigError(f"cells[{i}] must give a value for every grid axis; missing {missing}")
        subgrid = {a: entry[a] if isinstance(entry[a], list) else [entry[a]] for a in axes}
        for point in itertools.product(*subgrid.values()):
            extra = {**entry, **dict(zip(axes, point, strict=True))}
            cid = cell_id(extra, axes)
            if cid in given:
                raise ConfigError(_given_twice(cid, *given[cid], i, extra))
            given[cid] = i, extra
            cells[cid] = {**cells.get(cid, fixed), **extra}
            if origins is not None:
                origins[cid] = f"cells[{i}]"
    return cells


def axis_variable(name: str, axes: Iterable[str]) -> str:
    """The study-store name of a cell variable: `<name>_value` where a grid axis has its name (e.g. `loss`)."""
    return f"{name}_value" if name in axes else name


def _given_twice(cid: str, first: int, old: dict, second: int, new: dict) -> str:
    """The message for two explicit entries of one cell, with the values they disagree on."""
    where = f"cells[{first}] lists cell '{cid}' twice" if first == second else \
        f"cells[{first}] and cells[{second}] are the same cell '{cid}'"
    differ = [f"{k} {json.dumps(old.get(k))} vs {json.dumps(new.get(k))}" for k in sorted(set(old) | set(new))
              if json.dumps(old.get(k)) != json.dumps(new.get(k))]
    return f"{where}{' (' + ', '.join(differ) + ')' if differ else ''}: give each cell once"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def flow_yaml(value: Any) -> str:
    """`value` as one line of YAML, keys sorted: canonical like canonical_json, and readable where Snakemake shows
    it (a report's job parameters escape JSON's quotes)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, sort_keys=True, width=math.inf).strip()
