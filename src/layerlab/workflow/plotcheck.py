"""Plot specs checked against the study before any job: the variables it will produce and its grid axes.

Per plot kind (layerlab.report.plots.PLOTS): which keys name a variable, which name a facet (a grid axis, or one of the
few variable dims the kind facets over), their defaults, and which keys it needs. Kept torch- and matplotlib-free.
"""

from __future__ import annotations

from typing import Any

from layerlab.core.config import ConfigError
from layerlab.core.messages import nearest

# kind -> (variable keys with their defaults, facet keys with their defaults, required keys, dims allowed as facets)
KINDS: dict[str, tuple[dict[str, str | None], dict[str, str | None], set[str], set[str]]] = {
    "metric_vs_axis": ({"metric": None}, {"x": None, "hue": None}, {"metric", "x"}, {"step", "eval_step", "layer"}),
    "layer_step_heatmap": ({"var": None}, {"row": None, "col": None}, {"var"}, set()),
    "layer_trajectories": ({"var": None}, {"row": None, "col": None}, {"var"}, set()),
    "channel_step_heatmap": ({"var": None}, {"row": None, "col": None}, {"var"}, {"layer"}),
    "phase_diagram": ({"metric": None}, {}, {"metric"}, set()),
    "layer_curves": ({"var": None}, {"hue": None}, {"var", "hue"}, set()),
    "reconstructions": ({"_": "reconstruction"}, {"row": None}, {"row"}, set()),
    "spectra": ({"var": None}, {"row": None, "col": None}, {"var"}, set()),
    "representation_layers": ({"var": None}, {"row": None, "col": None, "hue": "checkpoint"}, {"var"},
                              {"checkpoint", "step"}),
    "layer_profile": ({"var": None}, {"row": None, "hue": None}, {"var"}, set()),
    "layer_accuracy": ({"var": "layer_test_acc", "metric": "test_acc"}, {"hue": "training"}, set(), set()),
    "regime_memory": ({"metric": "test_acc", "_": "peak_memory_parts"}, {"x": "training", "hue": None}, set(),
                      set()),
    "step_curves": ({"var": None}, {"hue": None, "col": None}, {"var", "hue"}, set()),
    "fisher_layers": ({"var": "log10_kappa_block", "kfac": "log10_kappa_kfac", "full": "log10_kappa_full"},
                      {"row": "fisher", "col": "checkpoint", "hue": None}, set(), {"checkpoint", "fisher"}),
}
NEEDS_AXES = {"phase_diagram": ("sigma_w2", "depth")}
# dims of store variables besides the grid axes, which `select` may pick from (e.g. the curvature probe's `p`)
STORE_DIMS = {"step", "eval_step", "layer", "channel", "eigen", "p", "checkpoint", "fisher", "rep_layer",
              "memory_part", "image", "y", "x"}


def plot_problems(spec: dict[str, Any], axes: dict[str, list], variables: set[str]) -> list[str]:
    """What is wrong with one plot spec; `axes` maps each grid axis to the values the cells take."""
    if spec["kind"] not in KINDS:  # a plug-in's kind: it checks its own spec when drawing
        return []
    var_keys, facet_keys, required, dims = KINDS[spec["kind"]]
    problems = [f"`{key}` is required for kind {spec['kind']}" for key in sorted(required - set(spec))]
    for key, default in var_keys.items():
        name = spec.get(key, default)
        if name is not None and name not in variables:
            problems.append(f"{'' if key == '_' else f'{key}: '}the study produces no variable '{name}'"
                            f"{nearest(name, variables)}")
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
    for key in sorted((set(spec) - set(facet_keys)) & {"x", "hue", "row", "col"}):
        problems.append(f"`{key}` is not used by kind {spec['kind']} (it takes {', '.join(facet_keys) or 'none'})")
    for key, default in facet_keys.items():
        dim = spec.get(key, default)
        if dim is None or dim in dims:
            continue
        if dim in fixed:
            problems.append(f"{key}: grid axis '{dim}' is fixed to one value by `select`")
        elif dim not in axes:
            allowed = [*axes, *sorted(dims)]
            problems.append(f"{key}: '{dim}' is not a grid axis (axes: {', '.join(allowed)}){nearest(dim, allowed)}")
    problems += [f"kind {spec['kind']} needs grid axis '{a}'" for a in NEEDS_AXES.get(spec["kind"], ())
                 if a not in axes or a in fixed]
    return problems


def grid_values(config: dict, cells: dict[str, dict]) -> dict[str, list]:
    """Each grid axis -> the values the cells take (explicit cells included), in order of appearance."""
    return {a: list(dict.fromkeys(c[a] for c in cells.values())) for a in config["grid"]}


def check_plots(config: dict, axes: dict[str, list], variables: set[str]) -> None:
    """Raise ConfigError naming each bad plot (`plots[i] (name)`) of a validated `config` whose cells take the grid
    values `axes` (grid_values) and produce `variables` (layerlab.workflow.variables.study_variables)."""
    problems = []
    names = [p["name"] for p in config["plots"]]
    for i, spec in enumerate(config["plots"]):
        where = f"plots[{i}] ({spec['name']})"
        problems += [f"{where}: {p}" for p in plot_problems(spec, axes, variables)]
        if names.count(spec["name"]) > 1:
            problems.append(f"{where}: another plot has the name '{spec['name']}' (one figure file each)")
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))
