"""The config front-end: study config -> validated, typed cells (layerlab.core.cell), every bad input caught before
any job.

The config schema (layerlab/workflow/schemas, package data) and the cell schema (generated from the parameter
sections, layerlab.core.cell) are compiled once into jsonschema Draft 2020-12 validators; the config validator fills
defaults as `snakemake.utils.validate(set_default=True)` does (nested ones included: a defaulted `trainability: {}`
gets its `metric` and `threshold`). Cell parameters are validated where they are written (`fixed`, `grid`,
`cells[i]`, `--config KEY=VALUE`), so a message names that place; a cell is then parsed from the merge of validated
parts (its sections fill the defaults). Messages are one line per problem: where, what, the nearest valid name.
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from layerlab.catalog import check_cell
from layerlab.core.cell import Cell, cell_defaults, cell_schema, per_model_keys
from layerlab.core.config import NAME_MAX, ConfigError, expand_cells
from layerlab.core.messages import nearest, where
from layerlab.core.registry import DATASETS, extend_schema, load_plugins

__all__ = ["cell_defaults", "check_study", "per_model_keys", "schema"]

SCHEMAS = Path(__file__).resolve().parent / "schemas"  # package data
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _with_defaults(cls: Any) -> Any:
    """A validator class that fills missing properties from their schema `default` (a copy) before checking them,
    as snakemake.utils.validate(set_default=True) does; a defaulted object is then filled in turn."""
    check_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(cls, {"properties": properties})


@cache
def schema(name: str) -> dict:
    """The `cell` schema (every section's parameters, plug-ins' included) or the `config` schema of `SCHEMAS`, with
    the registries' names (load plug-ins first)."""
    if name == "cell":
        return cell_schema()
    return extend_schema(yaml.load((SCHEMAS / f"{name}.schema.yaml").read_text(), Loader=Loader))


@cache
def config_validator() -> Draft202012Validator:
    return _with_defaults(Draft202012Validator)(schema("config"))


@cache
def cell_validator() -> Draft202012Validator:
    """Checks any subset of cell parameters (the schema requires none); fills nothing."""
    return Draft202012Validator(schema("cell"))


@cache
def property_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema("cell")["properties"][name])


def fuse_settings(config: dict) -> dict | None:
    """The study's `fuse` settings (a validated config): None when packs are off."""
    fuse = config["fuse"]
    if fuse is False:
        return None
    defaults = {k: v["default"] for k, v in schema("config")["properties"]["fuse"]["properties"].items()}
    return defaults | (fuse if isinstance(fuse, dict) else {})


def _describe(err: ValidationError, prefix: tuple) -> Iterator[str]:
    loc = where((*prefix, *err.absolute_path))
    schema: Any = err.schema  # jsonschema types these as possibly unset
    value: Any = err.validator_value
    instance: Any = err.instance
    if err.validator == "additionalProperties":
        known = set(schema.get("properties", {}))
        for key in sorted(set(instance) - known):
            hint = nearest(key, known)
            if not prefix and not err.absolute_path and key in cell_defaults():
                hint = (f": '{key}' is a cell parameter, it belongs under `fixed:` (or, for a quick try, "
                        f"`--config {key}=VALUE` overrides it in every cell)")
            yield f"{loc}: unknown key '{key}' ('{key}' was unexpected){hint}"
    elif err.validator == "enum":
        hint = nearest(instance, map(str, value))
        yield f"{loc}: {err.instance!r} is not one of {value}{hint}"
    elif err.validator == "oneOf":
        yield f"{loc}: {err.instance!r} is not valid (expected: {schema.get('description', value)})"
    else:
        yield f"{loc}: {err.message}"


def errors(validator: Draft202012Validator, instance: Any, prefix: tuple = ()) -> list[str]:
    found = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for err in found for line in _describe(err, prefix)]


def raise_if(problems: list[str]) -> None:
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


# --- command-line overrides -----------------------------------------------------------------------------------------

def _typed(text: str, sub: dict) -> Any:
    """A --config string typed by the cell schema: Snakemake leaves strings inside lists and mappings untyped."""
    kinds = sub.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    low = text.strip().lower()
    if "null" in kinds and low in ("null", "~", "none"):
        return None
    if "boolean" in kinds and low in ("true", "false"):
        return low == "true"
    for kind, parse in (("integer", int), ("number", float)):
        if kind in kinds:
            try:
                return parse(text)
            except ValueError:
                pass
    return text


def typed(value: Any, sub: dict) -> Any:
    if isinstance(value, str):
        return _typed(value, sub)
    if isinstance(value, list):
        return [typed(v, sub.get("items", sub)) for v in value]
    return value


def apply_overrides(config: dict, cli: Mapping[str, Any]) -> dict[str, Any]:
    """Move cell parameters given as `--config KEY=VALUE` out of the top level into every cell (typed by the schema)
    and type the strings of `--config 'fixed={...}'` / `'grid={...}'`; returns the overrides."""
    props = schema("cell")["properties"]
    for part in ("fixed", "grid"):
        given = cli[part] if isinstance(cli.get(part), dict) else {}
        for key, value in given.items():
            if key in props and isinstance(config.get(part), dict) and key in config[part]:
                config[part][key] = typed(value, {"type": "array", "items": props[key]} if part == "grid" else
                                          props[key])
    settings = schema("config")["properties"]  # `--config fuse=false`, `threads=2`: study settings, typed too
    config.update({k: typed(config[k], settings[k]) for k in cli if k in settings and k not in props and k in config})
    overrides = {k: typed(config.pop(k), props[k]) for k in cli if k in props and k in config}
    raise_if([line for k, v in overrides.items() for line in errors(cell_validator(), {k: v}, ("--config",))])
    grid = config.get("grid") or {}
    raise_if([f"--config {k}: '{k}' is a grid axis (values {grid[k]}); change the axis instead, e.g. "
              f"--config 'grid={{{k}: [{v}]}}'" for k, v in overrides.items() if k in grid])
    if overrides and isinstance(config.get("fixed", {}), dict):
        config["fixed"] = {**config.get("fixed", {}), **overrides}
        for entry in config.get("cells", []):  # an override wins in every cell, explicit ones included
            if isinstance(entry, dict):
                entry.update({k: v for k, v in overrides.items() if k in entry})
    return overrides


# --- the study ------------------------------------------------------------------------------------------------------

def whole(value: Any, sub: dict) -> Any:
    """`value` with each whole float where `sub` (a schema) wants an integer made an int: `steps: 1e5` is read as a
    float (jsonschema accepts 100000.0 as an integer), and cells, their ids and the jobs must see 100000."""
    if isinstance(value, list):
        return [whole(v, sub.get("items", {})) for v in value]
    kinds = sub.get("type", [])
    if isinstance(value, float) and value.is_integer() and "integer" in kinds and "number" not in kinds:
        return int(value)
    return value


def check_parts(config: dict) -> None:
    """Cell parameters where they are written: fixed, each grid axis value, each explicit cell; whole floats of
    integer parameters made ints."""
    cell = cell_validator()
    props = schema("cell")["properties"]
    problems = errors(cell, config.get("fixed", {}), ("fixed",))
    for axis, values in config["grid"].items():
        if axis not in cell_defaults():
            problems.append(f"grid: unknown axis '{axis}' ('{axis}' was unexpected: not a cell parameter)"
                            f"{nearest(axis, cell_defaults())}")
            continue
        problems += [p for j, v in enumerate(values) for p in errors(property_validator(axis), v, ("grid", axis, j))]
    for i, entry in enumerate(config.get("cells", [])):
        subgrid = {k for k, v in entry.items() if k in config["grid"] and isinstance(v, list)}
        problems += errors(cell, {k: v for k, v in entry.items() if k not in subgrid}, ("cells", i))
        problems += [p for k in sorted(subgrid) for j, v in enumerate(entry[k])
                     for p in errors(property_validator(k), v, ("cells", i, k, j))]
    raise_if(problems)
    grid = config["grid"]
    for part in [config.get("fixed", {}), grid, *config.get("cells", [])]:
        for k, v in part.items():  # a grid axis (and an explicit cell's list of its values) lists values
            part[k] = [whole(x, props[k]) for x in v] if part is grid or (k in grid and isinstance(v, list)) else \
                whole(v, props[k])


def check_batch_size(cid: str, cell: Cell, origin: str) -> None:
    data = cell.data
    n = DATASETS[data.dataset].splits[0]
    rows = min(n, data.train_subset) if data.train_subset else n
    if cell.run.batch_size > rows:
        subset = f" (train_subset {data.train_subset})" if data.train_subset else ""
        raise ConfigError(f"cell '{cid}'{origin}: batch_size {cell.run.batch_size} is larger than the "
                          f"{data.dataset} training split, {rows} rows{subset}")


TENSORBOARD_EXTRA = "pip install -e '.[tensorboard]'"  # how to get the optional dependency of `tensorboard: true`
DEPRECATED_KEYS = {"probes": "measurements"}  # old top-level key -> its name now


def rename_deprecated(config: dict) -> None:
    """Old names of top-level keys still work: renamed in place, with a warning that names the new key."""
    for old, new in DEPRECATED_KEYS.items():
        if old not in config:
            continue
        if new in config:
            raise ConfigError(f"'{old}' and '{new}' are the same key (the old and the new name); keep '{new}' only")
        warnings.warn(f"layerlab config: '{old}:' is deprecated, write '{new}:' (it lists the measurements beside "
                      f"training)", FutureWarning, stacklevel=3)
        config[new] = config.pop(old)


def check_study(config: dict, cli: Mapping[str, Any] | None = None, base: str | Path | None = None) -> dict[str, Cell]:
    """Validate `config` in place (defaults filled, command-line overrides moved into `fixed`, plug-in files as
    absolute paths) and return its typed cells (every parameter: the defaults filled). `base`: the study
    file's folder, where plug-in files are looked for before the working directory. Raises ConfigError naming where
    each problem is."""
    plugins = config.get("plugins", [])
    if isinstance(plugins, list):  # before the schemas: they add to them
        config["plugins"] = load_plugins(plugins, [base, "."] if base is not None else ["."])
    rename_deprecated(config)
    apply_overrides(config, cli or {})
    raise_if(errors(config_validator(), config))
    if len(config["study"].encode()) > NAME_MAX:
        raise ConfigError(f"study: the name is {len(config['study'].encode())} characters long, at most {NAME_MAX} "
                          f"(it names the folder results/<study>/)")
    if config["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"tensorboard: true needs the tensorboard package: {TENSORBOARD_EXTRA}")
    check_parts(config)
    origins: dict[str, str] = {}
    cells: dict[str, Cell] = {}
    for cid, given in expand_cells(config, origins).items():
        cells[cid] = cell = Cell.parse(given)
        origin = f" ({origins[cid]})" if cid in origins else ""
        try:
            check_cell(cell, config["measurements"])
        except ConfigError as err:
            raise ConfigError(f"cell '{cid}'{origin}: {err}") from None
        check_batch_size(cid, cell, origin)
    from layerlab.report.claims import check_claims  # these import this module
    from layerlab.workflow.plotcheck import STORE_DIMS, check_plots, grid_values
    from layerlab.workflow.variables import study_variables

    if config["plots"] or config["claims"]:  # both against the grid values and the variables the study produces
        axes = grid_values(config, {cid: cell.to_dict() for cid, cell in cells.items()})
        variables = study_variables(cells, config["measurements"], config["grid"])
        check_plots(config, axes, variables)
        check_claims(config, axes, variables, STORE_DIMS)
    return cells
