"""Plot specs checked against the study before any job: their parameters as the plot kind declares them (typed, with
defaults: layerlab.core.registry.PlotParam), the variables the study will produce and its grid axes. Kept torch- and
matplotlib-free.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from layerlab.core.config import ConfigError
from layerlab.core.messages import nearest
from layerlab.core.registry import PLOT_KEYS, PLOTS, PlotSpec

# dims of store variables besides the grid axes, which `select` may pick from (e.g. the curvature probe's `p`)
STORE_DIMS = {"step", "eval_step", "layer", "channel", "eigen", "p", "checkpoint", "fisher", "rep_layer",
              "memory_part", "image", "y", "x"}


def _parameter_problems(spec: dict[str, Any], kind: PlotSpec) -> list[str]:
    """Keys the kind does not take, required ones missing, values of the wrong type."""
    params = kind.parameters
    problems = [f"`{key}` is not used by kind {kind.name} (it takes {', '.join(params) or 'no parameters'})"
                f"{nearest(key, params)}" for key in sorted(set(spec) - set(params) - set(PLOT_KEYS))]
    problems += [f"`{key}` is required for kind {kind.name}" for key, param in params.items()
                 if param.required and spec.get(key) is None]
    for key in sorted(params.keys() & spec.keys()):
        problems += [f"{key}: {err.message}" for err in Draft202012Validator(params[key].schema).iter_errors(spec[key])]
    return problems


def _facet_problems(spec: dict[str, Any], kind: PlotSpec, axes: dict[str, list]) -> list[str]:
    """`select` and the facet parameters against the grid (and the dims the kind may facet over)."""
    problems = []
    select = spec.get("select", {})
    for axis, chosen in select.items():
        if axis not in axes:
            if axis not in STORE_DIMS:
                problems.append(f"select: '{axis}' is not a grid axis ({', '.join(axes)}){nearest(axis, axes)}")
            continue
        for value in chosen if isinstance(chosen, list) else [chosen]:
            if value not in axes[axis]:
                problems.append(f"select: {axis} {value!r} is not in the grid (values {axes[axis]})")
    fixed = {a for a, v in select.items() if not isinstance(v, list)}
    for key, param in kind.parameters.items():
        dim = spec.get(key, param.default)
        if param.role != "facet" or not isinstance(dim, str) or dim in param.dims:
            continue
        if dim in fixed:
            problems.append(f"{key}: grid axis '{dim}' is fixed to one value by `select`")
        elif dim not in axes:
            allowed = [*axes, *param.dims]
            problems.append(f"{key}: '{dim}' is not a grid axis (axes: {', '.join(allowed)}){nearest(dim, allowed)}")
    missing = [axis for axis in kind.needs_axes if axis not in axes or axis in fixed]
    return problems + [f"kind {kind.name} needs grid axis '{axis}'" for axis in missing]


def plot_problems(spec: dict[str, Any], axes: dict[str, list], variables: set[str]) -> list[str]:
    """What is wrong with one plot spec; `axes` maps each grid axis to the values the cells take."""
    kind = PLOTS[spec["kind"]]
    problems = _parameter_problems(spec, kind)
    named = [(f"{key}: ", spec.get(key, param.default)) for key, param in kind.parameters.items()
             if param.role == "variable"]
    for prefix, name in [*named, *(("", name) for name in kind.reads)]:
        if isinstance(name, str) and name not in variables:
            problems.append(f"{prefix}the study produces no variable '{name}'{nearest(name, variables)}")
    return problems + _facet_problems(spec, kind, axes)


def grid_values(config: dict, cells: dict[str, dict]) -> dict[str, list]:
    """Each grid axis -> the values the cells take (explicit cells included), in order of appearance."""
    return {a: list(dict.fromkeys(c[a] for c in cells.values())) for a in config["grid"]}


def check_plots(config: dict, axes: dict[str, list], variables: set[str]) -> None:
    """Raise ConfigError naming each bad plot (`plots[i] (name)`) of a validated `config` whose cells take the grid
    values `axes` (grid_values) and produce `variables` (layerlab.workflow.variables.study_variables); then fill
    each plot's parameter defaults, as the schema's are filled."""
    problems = []
    names = [p["name"] for p in config["plots"]]
    for i, spec in enumerate(config["plots"]):
        where = f"plots[{i}] ({spec['name']})"
        problems += [f"{where}: {p}" for p in plot_problems(spec, axes, variables)]
        if names.count(spec["name"]) > 1:
            problems.append(f"{where}: another plot has the name '{spec['name']}' (one figure file each)")
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))
    config["plots"] = [PLOTS[spec["kind"]].complete(spec) for spec in config["plots"]]
