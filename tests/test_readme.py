"""Every Python snippet of the README runs verbatim after `make run` (the default study, shortened)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, snakemake, write_study

pytestmark = pytest.mark.e2e

SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)

# Runs a snippet statement by statement; an expression whose line ends in a comment "# a x b" must have dims (a, b).
DRIVER = r'''
import ast, re, sys
src = sys.stdin.read()
ns = {}
for node in ast.parse(src).body:
    code = ast.get_source_segment(src, node)
    claim = re.search(r"#\s*(\w+(?: x \w+)+)\s*$", src.splitlines()[node.end_lineno - 1])
    if isinstance(node, ast.Expr) and claim:
        value = eval(code, ns)
        dims = tuple(value.dims) if hasattr(value, "dims") else (value.index.name, value.columns.name)
        assert dims == tuple(claim.group(1).split(" x ")), (code, dims)
        print("checked", code, dims)
    else:
        exec(code, ns)
'''


@pytest.fixture(scope="module")
def default_study_run(tmp_path_factory) -> Path:
    """config/config.yaml with the same study name and axes, shortened (fewer steps, narrower nets)."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["fixed"].update(width=16, steps=20, log_every=10, eval_every=10)
    workdir = tmp_path_factory.mktemp("readme")
    write_study(workdir, config)
    snakemake(workdir)
    return workdir


def test_readme_has_python_snippets():
    assert SNIPPETS and all("results/" in s for s in SNIPPETS)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs_verbatim_after_make_run(default_study_run, snippet):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=snippet, cwd=default_study_run, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"README snippet failed:\n{snippet}\n{proc.stderr[-3000:]}"
    assert proc.stdout.count("checked") == len(re.findall(r"#\s*\w+(?: x \w+)+\s*$", snippet, re.M))
