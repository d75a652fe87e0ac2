"""End-to-end front-end: a `--config KEY=VALUE` override in a real run, a failing figure that leaves the others,
`python -m layerlab.diff` against the stores, and dry-run refusals before any job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, snakemake, write_study

from layerlab.core.store import read_store

pytestmark = pytest.mark.e2e

STUDY = {
    "study": "front",
    "grid": {"depth": [3], "loss": ["ce", "ce_lbe"]},
    "fixed": {"dataset": "digits", "width": 8, "steps": 30, "batch_size": 64, "log_every": 4, "eval_every": 6},
    "plots": [
        {"name": "accuracy", "kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "hue": "loss"},
        # passes every check before the run (test_acc is a variable, loss an axis) but fails to draw: no layer dim
        {"name": "broken", "kind": "layer_curves", "var": "test_acc", "hue": "loss"},
        {"name": "entropy", "kind": "layer_step_heatmap", "var": "batch_entropy", "col": "loss"},
    ],
}


def diff(workdir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerlab.diff", "-d", str(workdir), "--configfile",
                           str(workdir / "study.yaml"), *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The study run with `--config steps=12 lr=2e-3` (overriding fixed steps 30, lr default 1e-4)."""
    workdir = tmp_path_factory.mktemp("front")
    write_study(workdir, STUDY)
    proc = snakemake(workdir, "--config", "steps=12", "lr=2e-3", check=False)
    return workdir, proc


def test_override_reaches_the_run_typed(ran):
    workdir, _ = ran
    for loss in ("ce", "ce_lbe"):
        cell = read_store(workdir / f"results/front/cells/depth~3/loss~{loss}/train.zarr")
        config = json.loads(cell.attrs["config"])
        assert config["steps"] == 12 and config["lr"] == 2e-3 and isinstance(config["steps"], int)
        assert int(cell["step"][-1]) == 12


def test_failing_figure_leaves_the_others(ran):
    workdir, proc = ran
    figures = workdir / "results/front/figures"
    assert proc.returncode != 0
    assert "layerlab: plot 'broken' (kind layer_curves) failed" in proc.stdout + proc.stderr
    assert not (figures / "broken.png").exists()
    for name in ("accuracy", "entropy"):
        assert (figures / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" in (workdir / "results/front/logs/plots/broken.log").read_text()
    # a rerun retries only the broken figure: the good ones and every cell are up to date
    dry = snakemake(workdir, "-n", "--config", "steps=12", "lr=2e-3", check=False)
    assert re.search(r"^plots\s+1$", dry.stdout, re.MULTILINE) and not re.search(r"^train\s", dry.stdout, re.M)


def test_diff_names_changed_keys_new_and_removed_cells(ran):
    workdir, _ = ran
    same = diff(workdir, "--config", "steps=12", "lr=2e-3").stdout
    assert same.strip() == "2 cells: 0 changed, 0 without a store, 2 unchanged; 0 stored cells not in the study"
    lines = diff(workdir).stdout.splitlines()  # without the override: the study file's values
    assert "depth~3/loss~ce: lr: 0.002 -> 0.0001" in lines and "depth~3/loss~ce_lbe: steps: 12 -> 30" in lines
    assert lines[-1].startswith("2 cells: 2 changed, 0 without a store")
    study = json.loads(json.dumps(STUDY))
    study["grid"]["depth"] = [4]
    write_study(workdir, study)
    try:
        lines = diff(workdir, "--config", "steps=12", "lr=2e-3").stdout.splitlines()
    finally:
        write_study(workdir, STUDY)
    assert "depth~4/loss~ce: new (no train.zarr yet)" in lines
    assert "depth~3/loss~ce_lbe: not in the study any more (its store stays)" in lines


@pytest.mark.parametrize(("args", "expected"), [
    (("--config", "depth=5"), "--config depth: 'depth' is a grid axis (values [3])"),
    (("--config", "steps=seven"), "--config steps: 'seven' is not of type 'integer'"),
    (("--config", "batch_size=2000"), "cell 'depth~3/loss~ce': batch_size 2000 is larger than the digits training "
                                      "split, 1437 rows"),
])
def test_bad_overrides_stop_before_any_job(tmp_path, args, expected):
    write_study(tmp_path, STUDY)
    proc = snakemake(tmp_path, "-n", *args, check=False)
    out = proc.stdout + proc.stderr  # a dry run logs to stdout
    assert proc.returncode != 0 and expected in out
    assert "layerlab config error" in out and "properties:" not in out  # no schema dump
    assert not (tmp_path / "results").exists()


def test_nested_cli_values_are_typed(tmp_path):
    """`--config 'fixed={steps: 7}'` (Snakemake hands nested values over as strings) plans like steps: 7."""
    write_study(tmp_path, STUDY)
    proc = snakemake(tmp_path, "-n", "--config", "fixed={steps: 7, train_subset: 500}", "grid={depth: [4, 5]}")
    assert re.search(r"^train\s+4$", proc.stdout, re.MULTILINE)
    assert "depth~5/loss~ce_lbe" in proc.stdout
