"""Every dependency declared once, in pyproject.toml: what the package, the job scripts and the tests import is
declared there, nothing twice, and the conda env of the rules (envs/layerlab.yaml) lists the same requirements."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

import yaml
from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
RUNTIME = [*PROJECT["dependencies"], *EXTRAS["fisher"], *EXTRAS["tensorboard"]]  # what the workflow's jobs may import


def name(requirement: str) -> str:
    """The normalized distribution name of a requirement ("PyYAML>=6" -> "pyyaml")."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()


def imported(*folders: str) -> dict[str, str]:
    """Top-level third-party modules imported anywhere (function-local imports included) under `folders`, with a
    file that imports each; the project's own modules and local test/bench helpers excluded."""
    files = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    local = {p.stem for p in files} | {"layerlab"}
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for module in (n.split(".")[0] for n in names):
                if module not in sys.stdlib_module_names and module not in local:
                    found.setdefault(module, str(path.relative_to(ROOT)))
    return found


def undeclared(modules: dict[str, str], requirements: list[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    declared = {name(r) for r in requirements}
    return [f"{module} (imported by {path})" for module, path in sorted(modules.items())
            if not {name(d) for d in distributions.get(module, [module])} & declared]


def test_what_the_package_and_the_jobs_import_is_a_runtime_dependency():
    assert not undeclared(imported("src", "scripts"), RUNTIME)


def test_what_the_tests_and_benchmarks_import_is_declared():
    assert not undeclared(imported("tests", "bench"), [*RUNTIME, *EXTRAS["dev"]])


def test_the_check_sees_an_undeclared_import():
    without_scipy = [r for r in PROJECT["dependencies"] if name(r) != "scipy"]
    assert undeclared({"scipy": "x.py"}, without_scipy) == ["scipy (imported by x.py)"]
    assert undeclared({"yaml": "x.py", "sklearn": "y.py"}, ["PyYAML>=6", "scikit_learn"]) == []


def test_each_requirement_is_declared_once():
    everything = [name(r) for r in [*PROJECT["dependencies"], *(r for rs in EXTRAS.values() for r in rs)]]
    assert len(everything) == len(set(everything)), everything


def test_the_conda_env_lists_the_runtime_requirements():
    env = yaml.safe_load((ROOT / "envs/layerlab.yaml").read_text())
    python, pip, rest = env["dependencies"]
    assert python == f"python={PROJECT['requires-python'].removeprefix('>=')}" and pip == "pip"
    assert rest["pip"] == RUNTIME, f"envs/layerlab.yaml's pip list should read: {RUNTIME}"
