"""End-to-end front-end: a `--config KEY=VALUE` override in a real run, a failing figure that leaves the others,
`python -m layerlab.diff` against the stores, and dry-run refusals before any job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, snakemake, trained, write_study

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
    assert re.search(r"^plots\s+1$", dry.stdout, re.MULTILINE) and trained(dry) == 0


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
    assert trained(proc) == 4
    assert "depth~5/loss~ce_lbe" in proc.stdout


# --- study files as a researcher writes them (`snakemake -n`, where the user sees it) ------------------------------

STUDY_TEXT = """\
study: numbers
grid: {lr: [1e-3, 3e-4], depth: [3]}
fixed: {dataset: digits, width: 8, steps: 1e1, batch_size: 64, log_every: 5, eval_every: 5}
cells:
  - {lr: 1e-2, depth: 3, momentum: 9e-1}
"""


def test_numbers_written_as_papers_write_them_plan(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY_TEXT)
    proc = snakemake(tmp_path, "-n")
    assert trained(proc) == 3
    for cid in ("lr~0.001/depth~3", "lr~0.0003/depth~3", "lr~0.01/depth~3"):
        assert f"results/numbers/cells/{cid}/train.zarr" in proc.stdout


@pytest.mark.parametrize(("text", "expected"), [
    (STUDY_TEXT.replace("numbers", "n" * 300),
     "layerlab config error: study: the name is 300 characters long, at most 250"),
    (STUDY_TEXT + "  - {lr: 1e-2, depth: 3, momentum: 0.5}\n",
     "layerlab config error: cells[0] and cells[1] are the same cell 'lr~0.01/depth~3' (momentum 0.9 vs 0.5): give "
     "each cell once"),
])
def test_study_file_mistakes_are_one_line_before_any_job(tmp_path, text, expected):
    (tmp_path / "study.yaml").write_text(text)
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and expected in out, out[-2000:]
    assert "Traceback" not in out and not (tmp_path / "results").exists()


def test_plugin_files_resolve_beside_the_study_file(tmp_path):
    """The study in studies/, its plug-in beside it, the run in another folder: the plug-in is found (and, as
    before, one in the working directory)."""
    studies, workdir = tmp_path / "studies", tmp_path / "run"
    studies.mkdir()
    shutil.copy(ROOT / "tests/plugins/grad_norm.py", studies / "my_probes.py")
    study = {**STUDY, "plugins": ["my_probes.py"], "fixed": {**STUDY["fixed"], "grad_norm_probe": True},
             "plots": []}
    (studies / "study.yaml").write_text(yaml.safe_dump(study))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(studies / "study.yaml"), "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0 and trained(proc) == 2, proc.stdout[-2000:]
    shutil.move(studies / "my_probes.py", workdir / "my_probes.py")  # in the working directory: found there
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-2000:]
    (workdir / "my_probes.py").unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode != 0 and f"plugins: file 'my_probes.py' not found (relative to {studies} or {workdir})" \
        in proc.stdout + proc.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("study: x\ngrid: {depth: [3]\n  fixed: 1\n", "PATH, line 3, column 3: not valid YAML: did not find expected "
                                                  "',' or '}'"),
    (None, "study file PATH not found"),
])
def test_diff_names_the_line_of_a_yaml_error_and_a_missing_study_file(tmp_path, text, expected):
    """Snakemake reads `--configfile` itself, before the workflow runs (`Config file is not valid JSON or YAML`, a
    FileNotFoundError traceback for a missing file); `python -m layerlab.diff` says which line, in one line."""
    path = tmp_path / "study.yaml"
    if text is not None:
        path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "layerlab.diff", "-d", str(tmp_path), "--configfile", str(path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"layerlab config error: {expected.replace('PATH', str(path))}"
