"""Shared helpers: typed cells with their defaults, and running the real Snakemake workflow in a temp dir."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerlab.core.cell import Cell
from layerlab.core.sections import DataParams

pytest_plugins = ["browser"]  # the `browser` fixture (tests/browser.py)

ROOT = Path(__file__).resolve().parents[1]


def make_cell(**overrides) -> Cell:
    """A typed cell: `overrides` (cell keys, lists as in a study) and the defaults of every other parameter."""
    return Cell.parse(overrides)


def changed(cell: Cell, **overrides) -> Cell:
    """`cell` with other values of some of its keys."""
    return Cell.parse({**cell.to_dict(), **overrides})


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in `workdir` with the study config `workdir/study.yaml`."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "study.yaml"), "-c2", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count of Snakemake's job table (on stdout in a dry run, on stderr in a run)."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr,
                                                               re.MULTILINE) if m.group(1) != "total"}


def trained(proc: subprocess.CompletedProcess) -> int:
    """Cells a Snakemake run trains: its `train` jobs and its `take_over` jobs (the cells its packs train)."""
    counted = jobs(proc)
    return counted.get("train", 0) + counted.get("take_over", 0)


def write_study(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def finished_study(tmp_path_factory, config: dict) -> Path:
    """`config` run once in a fresh folder (for a module-scoped fixture: each test works on a `private_copy`)."""
    workdir = tmp_path_factory.mktemp(config["study"])
    write_study(workdir, config)
    snakemake(workdir)
    return workdir


def private_copy(workdir: Path, tmp_path: Path) -> Path:
    """A copy of a finished run that a test may change (mtimes and Snakemake metadata preserved)."""
    copy = tmp_path / "study"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy


TINY_STUDY = {
    "study": "tiny",
    "grid": {"depth": [3, 4], "loss": ["ce", "ce_lbe"]},
    "fixed": {"dataset": "digits", "width": 16, "steps": 30, "batch_size": 64, "log_every": 10, "eval_every": 15,
              "lr": 1e-3, "lbe_beta": 0.01},
    # one diverging cell outside the product grid (a non-finite loss is a result, not a crash)
    "cells": [{"depth": 5, "loss": "ce", "optimizer": "sgd", "lr": 1.0e12}],
    "plots": [
        {"name": "accuracy_vs_depth", "kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "hue": "loss"},
        {"name": "entropy_heatmaps", "kind": "layer_step_heatmap", "var": "batch_entropy", "row": "loss",
         "col": "depth"},
        {"name": "alpha", "kind": "layer_trajectories", "var": "alpha", "col": "depth", "select": {"loss": "ce_lbe"}},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def plugins_loaded_here_only():
    """What a test module's plug-ins register (the registries, the schemas built from them) leaves with the module:
    a later module checks and plans cells as a fresh process would."""
    from layerlab.core import registry
    from layerlab.workflow import validate

    registries = [r for r in vars(registry).values() if isinstance(r, registry.Registry)]
    saved = [(r, dict(r._entries), dict(r._origins)) for r in registries]
    modules, sources = set(sys.modules), dict(registry.PLUGIN_SOURCES)
    yield
    for r, items, origins in saved:
        r._items.clear()
        r._items.update(items)
        r._origins.clear()
        r._origins.update(origins)
    for name in set(sys.modules) - modules:
        if name.startswith("layerlab_plugin_"):  # so that loading the file again registers it again
            del sys.modules[name]
    registry.PLUGIN_SOURCES.clear()
    registry.PLUGIN_SOURCES.update(sources)
    for cached in (validate.schema, validate.config_validator, validate.cell_validator, validate.property_validator):
        cached.cache_clear()


@pytest.fixture(scope="session")
def digits_path(tmp_path_factory) -> Path:
    """sklearn's digits, prepared once per test session."""
    from layerlab.data.datasets import prepare

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    prepare("digits", path, path.parent)
    return path


@pytest.fixture(scope="session")
def digits(digits_path):
    from layerlab.data.datasets import load

    return load(digits_path)


@pytest.fixture(scope="session")
def digits_unit(digits_path):
    from layerlab.data.datasets import load

    return load(digits_path, data=DataParams(input_scaling="unit"))


@pytest.fixture
def tiny_config() -> dict:
    return yaml.safe_load(yaml.safe_dump(TINY_STUDY))  # deep copy
