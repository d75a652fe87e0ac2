"""Study config -> ablation cells.

A study declares `grid` (axes whose product gives the cells), `fixed` (parameters shared by all cells) and
optional explicit `cells`. An explicit cell names a value for every grid axis; if that cell is in the grid
its other keys override the grid cell's, otherwise it is added. A list of values for a grid axis in an explicit
cell makes it a sub-grid: one explicit cell per combination (e.g. other learning rates for another dataset).
A cell's id is the readable path `axis~value/axis~value/...` over the grid axes; its parameters travel to every
rule as one canonical JSON string, so that a changed cell reruns alone.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

CELL_ID_PATTERN = r"[A-Za-z0-9_]+~[^/]+(?:/[A-Za-z0-9_]+~[^/]+)*"
CASCADE_MODELS = ("fnn", "cascade_cnn", "cascade_resnet")  # models the cascade probe can reconstruct (paper 003)


class ConfigError(ValueError):
    """A study config that cannot be turned into cells; the message names the offending key."""


def format_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", text):
        raise ConfigError(f"grid value {value!r} cannot be part of a cell id (use letters, digits, _ . + -)")
    return text


def cell_id(cell: dict, axes: list[str]) -> str:
    return "/".join(f"{axis}~{format_value(cell[axis])}" for axis in axes)


def expand_cells(config: dict, origins: dict[str, str] | None = None) -> dict[str, dict]:
    """Cell id -> cell parameters (fixed merged with the grid point and any explicit override); `origins`, if
    given, receives cell id -> 'cells[i]' for the cells an explicit entry adds or overrides."""
    grid: dict[str, list] = config["grid"]
    axes = list(grid)
    fixed = config.get("fixed", {})
    if overlap := sorted(set(axes) & set(fixed)):
        raise ConfigError(f"key(s) {overlap} appear both in 'grid' and in 'fixed'")
    cells = {}
    for point in itertools.product(*grid.values()):
        cell = {**fixed, **dict(zip(axes, point, strict=True))}
        cells[cell_id(cell, axes)] = cell
    for i, entry in enumerate(config.get("cells", [])):
        if missing := [a for a in axes if a not in entry]:
            raise ConfigError(f"cells[{i}] must give a value for every grid axis; missing {missing}")
        subgrid = {a: entry[a] if isinstance(entry[a], list) else [entry[a]] for a in axes}
        for point in itertools.product(*subgrid.values()):
            extra = {**entry, **dict(zip(axes, point, strict=True))}
            cid = cell_id(extra, axes)
            cells[cid] = {**cells.get(cid, fixed), **extra}
            if origins is not None:
                origins[cid] = f"cells[{i}]"
    return cells


def check_cell(cell: dict, probes: list[str] | None = None) -> None:
    """Constraints between parameters that a JSON schema cannot express."""
    from layerlab.heads import check_head  # paper 001's output heads (imports ConfigError from here)
    if cell["loss"] == "ce_lbe" and cell["lbe_layers"] == "middle" and cell["depth"] < 3:
        raise ConfigError(f"loss 'ce_lbe' with lbe_layers 'middle' needs depth >= 3 (got depth {cell['depth']})")
    check_head(cell)
    if cell["quantize_floor"] is not None and not (cell["quantize_bits"] and cell["weight_entropy_bits"]):
        raise ConfigError("quantize_floor (dynamic bits) needs quantize_bits (the ceiling) and weight_entropy_bits "
                          "(M, the entropy estimate) > 0")
    from layerlab.regimes import check_training  # paper 001 ch. 6: training regime
    check_training(cell)
    if probes and "cascade" in probes and (cell["model"] not in CASCADE_MODELS or cell["bn_variant"] != "none"):
        raise ConfigError(f"the cascade probe reconstructs fully connected or plain conv layers: it needs model "
                          f"{' or '.join(CASCADE_MODELS)} without BN (got '{cell['model']}', bn_variant "
                          f"'{cell['bn_variant']}')")
    if cell["model"] in CASCADE_MODELS[1:]:
        if cell["bn_variant"] != "none" or cell["bn_last_layer"]:
            raise ConfigError(f"model {cell['model']} has no BatchNorm (paper 003): bn_variant must be 'none'")
        if cell["depth"] < 1 + cell["stem_downsample"]:
            raise ConfigError(f"model {cell['model']} needs depth >= {1 + cell['stem_downsample']}, its stem "
                              f"(one conv + stem_downsample stride-2 convs); got depth {cell['depth']}")
    if cell["bn_last_layer"] and cell["bn_variant"] == "none":
        raise ConfigError("bn_last_layer needs a BatchNorm variant (bn_variant is 'none')")
    if cell["model"] in ("resnet", "preresnet"):
        if cell["depth"] < 8 or (cell["depth"] - 2) % 6:
            raise ConfigError(f"a {cell['model']}'s depth is 6n + 2 with n >= 1 (20, 56, 110, ...), "
                              f"got {cell['depth']}")
        if cell["bn_last_layer"]:
            raise ConfigError(f"bn_last_layer is not defined for model '{cell['model']}'; its fix is last_bn")
    elif cell["last_bn"]:
        raise ConfigError(f"last_bn (a BatchNorm before the classifier) needs model 'resnet' or 'preresnet' "
                          f"(got '{cell['model']}')")
    pattern = cell.get("freeze_weights", "")
    n_maps = {"fnn": cell["depth"] + 1, "cnn": cell["depth"] + 1, "resnet": cell["depth"],
              "preresnet": cell["depth"]}.get(cell["model"])
    if pattern and n_maps and len(pattern) != n_maps:
        raise ConfigError(f"freeze_weights needs one digit per layer including the output layer, "
                          f"{n_maps} (got '{pattern}')")
    if widths := cell["widths"]:
        if cell["model"] != "fnn" or len(widths) != cell["depth"]:
            raise ConfigError(f"widths {widths} needs model 'fnn' and depth = its length {len(widths)} "
                              f"(got model '{cell['model']}', depth {cell['depth']})")
    if probes and "representation" in probes and cell["representation_k"] >= cell["representation_samples"]:
        raise ConfigError(f"representation_k ({cell['representation_k']}) must be smaller than "
                          f"representation_samples ({cell['representation_samples']}): k neighbours besides the sample")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def deepest_sibling(cells: dict[str, dict]) -> dict[str, str]:
    """Cell id -> id of the deepest cell that differs from it in depth only.

    Paper 003 reads the cascade cutoff l* off one deep network and predicts every shallower network with the
    same parameters trainable iff its depth <= l*; the cascade therefore runs on the deepest sibling only.
    """
    deepest: dict[str, str] = {}
    key = {cid: canonical_json({k: v for k, v in cell.items() if k != "depth"}) for cid, cell in cells.items()}
    for cid, cell in cells.items():
        best = deepest.get(key[cid])
        if best is None or cell["depth"] > cells[best]["depth"]:
            deepest[key[cid]] = cid
    return {cid: deepest[key[cid]] for cid in cells}
