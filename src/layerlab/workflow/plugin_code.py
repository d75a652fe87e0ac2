"""Which plug-in code a job runs, by the sha256 of its source: a job's params (editing a plug-in reruns the jobs that
ran it) and its store's `plugins` attribute (`python -m layerlab.diff` names the plug-in that changed).

A plug-in's code is its study `plugins:` file (or module), and the module a lazy reference of its declaration names
("my_package.impl:MyProbe"); modules these import are not followed. Built-ins are layerlab's own code: edits of the
library rerun nothing (README, "What reruns").
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from layerlab.catalog.checks import active_probes
from layerlab.core.cell import Cell
from layerlab.core.registry import (
    DATASETS,
    DECISION_HEADS,
    MEASUREMENTS,
    MODELS,
    PLOTS,
    PLUGIN_SOURCES,
    PROBES,
    REGIMES,
    Registry,
)

# the fields of a declaration that name its code
REFERENCES = ("impl", "build", "draw", "source", "collect", "summarize", "search_space", "prepare")


def digest(path: Path) -> str:
    """The first 16 hex digits of the sha256 of a source file (read once per version of the file)."""
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@cache
def _digest(path: Path, *version: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def sources(registry: Registry, name: str) -> dict[str, Path]:
    """Label -> source file of the plug-in code behind declaration `name`: its plug-in's file and the modules its lazy
    references name outside layerlab; {} for a built-in."""
    plugin = registry.origin(name)
    if plugin is None or plugin not in PLUGIN_SOURCES:
        return {}
    files = {plugin: PLUGIN_SOURCES[plugin]}
    for field in REFERENCES:
        ref = getattr(registry[name], field, None)
        module = ref.partition(":")[0] if isinstance(ref, str) else ""
        if module and not module.startswith("layerlab.") and (spec := importlib.util.find_spec(module)) and spec.origin:
            files[module] = Path(spec.origin)
    return files


def code_of(used: Iterable[tuple[Registry, str]]) -> dict[str, str]:
    """{plug-in: digest} of the plug-in code behind these (registry, declaration) pairs."""
    return {label: digest(path) for registry, name in used for label, path in sources(registry, name).items()}


def job_plugins(cell: Cell, measurement: str | None = None) -> dict[str, str]:
    """{plug-in: digest} of the plug-in code the train job of `cell` runs (its dataset's preparation, model, regime,
    decision head and training probes) or, with `measurement`, that measurement's job (the measurement, the dataset
    and the model it rebuilds)."""
    used: list[tuple[Registry, str]] = [(DATASETS, cell.data.dataset), (MODELS, cell.model.model)]
    if measurement is None:
        used += [(REGIMES, cell.regime.training), (DECISION_HEADS, cell.regime.layer_head),
                 *((PROBES, probe) for probe in active_probes(cell))]
    else:
        used.append((MEASUREMENTS, measurement))
    return code_of(used)


def dataset_plugins(name: str) -> dict[str, str]:
    """{plug-in: digest} of the code that prepares dataset `name` ({} for a built-in)."""
    return code_of([(DATASETS, name)])


def plot_plugins(kinds: Iterable[str]) -> dict[str, str]:
    """{plug-in: digest} of the plug-in code behind these plot kinds (what draws and captions their figures)."""
    return code_of((PLOTS, kind) for kind in kinds)
