"""What reruns (README, "What reruns"): an edited plug-in reruns the cells whose jobs ran it and `layerlab.diff` names
it; an edit of layerlab's library reruns nothing (diff counts the stores another version wrote); an edited job script
reruns its rule's jobs; a deleted train.zarr is made again, as diff says. On a copy of the workflow (Snakefile, rules,
scripts, library), so that the edits touch no checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from layerlab import __version__
from layerlab.core.store import read_store

pytestmark = pytest.mark.e2e

STUDY = {"study": "reruns", "plugins": ["my_probes.py"], "grid": {"grad_norm_probe": [False, True]},
         "fixed": {"dataset": "digits", "depth": 3, "width": 8, "steps": 10, "batch_size": 64, "log_every": 5,
                   "eval_every": 5}}
PROBE, PLAIN = "grad_norm_probe~true", "grad_norm_probe~false"


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The workflow copied: its Snakefile puts its own src/ first (in planning and in every job)."""
    root = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "scripts", "src", "config", "envs", "profiles"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, root / name)
    return root


@pytest.fixture(scope="module")
def workdir(copy, tmp_path_factory) -> Path:
    """The study run once; its file and plug-in in studies/, the run in run/."""
    base = tmp_path_factory.mktemp("reruns")
    (base / "studies").mkdir()
    shutil.copy(ROOT / "tests/plugins/grad_norm.py", base / "studies/my_probes.py")
    (base / "studies/study.yaml").write_text(yaml.safe_dump(STUDY))
    smk(copy, base / "run")
    return base / "run"


def smk(copy: Path, workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir.parent / "studies/study.yaml"), "-c1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned(copy: Path, workdir: Path) -> dict[str, int]:
    """Rule -> number of jobs `snakemake -n` would run ({} when nothing is to be done)."""
    out = smk(copy, workdir, "-n")
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.MULTILINE) if m[1] not in ("total",)}


def cells(n: int) -> dict[str, int]:
    """What `planned` is when n training cells rerun: they and the study-level jobs."""
    return {"train": n, "collect": 1, "claims": 1, "study_page": 1, "all": 1}


def diff(copy: Path, workdir: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "layerlab.diff", "-d", str(workdir), "--configfile",
                           str(workdir.parent / "studies/study.yaml")], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONWARNINGS": "ignore"})
    return proc.stdout.splitlines()


def grad_norm(workdir: Path):
    return read_store(workdir / f"results/reruns/cells/{PROBE}/train.zarr")["grad_norm"]


def test_an_edited_plugin_reruns_the_cells_that_ran_it_and_diff_names_it(copy, workdir):
    assert planned(copy, workdir) == {}
    before = grad_norm(workdir)
    plugin = workdir.parent / "studies/my_probes.py"
    plugin.write_text(plugin.read_text().replace("float(m.weight.grad.norm())", "2 * float(m.weight.grad.norm())"))
    assert planned(copy, workdir) == cells(1)
    lines = diff(copy, workdir)
    assert f"{PROBE}: plugin my_probes.py changed" in lines and not any(PLAIN in line for line in lines)
    assert lines[-1] == "2 cells: 1 changed, 0 without a store, 1 unchanged; 0 stored cells not in the study"
    smk(copy, workdir)
    assert (grad_norm(workdir).sel(step=[0, 5]) == 2 * before.sel(step=[0, 5])).all()  # the new code's values
    assert planned(copy, workdir) == {} and diff(copy, workdir)[-1].startswith("2 cells: 0 changed")
    attrs = read_store(workdir / f"results/reruns/cells/{PROBE}/train.zarr").attrs
    assert list(json.loads(attrs["plugins"])) == ["my_probes.py"]


def test_an_edited_dataset_plugin_prepares_the_dataset_again_and_reruns_its_cells(copy, tmp_path):
    (tmp_path / "studies").mkdir()
    plugin = tmp_path / "studies/my_dataset.py"
    shutil.copy(ROOT / "tests/plugins/synthetic_images.py", plugin)
    study = {"study": "data_reruns", "plugins": ["my_dataset.py"], "grid": {"depth": [1, 2]},
             "fixed": {"dataset": "synthetic_images", "width": 8, "steps": 10, "batch_size": 32, "log_every": 5,
                       "eval_every": 5}}
    (tmp_path / "studies/study.yaml").write_text(yaml.safe_dump(study))
    workdir = tmp_path / "run"
    smk(copy, workdir)
    assert planned(copy, workdir) == {}
    plugin.write_text(plugin.read_text().replace("random_state=0)\n", "random_state=1)\n", 1))
    assert planned(copy, workdir) == {"dataset_plugin": 1, **cells(2)}
    assert "depth~1: plugin my_dataset.py changed" in diff(copy, workdir)
    before = (workdir / "resources/datasets/synthetic_images.json").read_text()
    smk(copy, workdir)
    assert (workdir / "resources/datasets/synthetic_images.json").read_text() != before  # other arrays
    assert planned(copy, workdir) == {}


def test_an_edit_of_the_library_reruns_nothing(copy, workdir):
    module = copy / "src/layerlab/probes/batch_entropy.py"
    source = module.read_text()
    module.write_text(source.replace("eps = 1 makes H >= 0", "eps = 1 (edited) makes H >= 0"))
    try:
        assert planned(copy, workdir) == {}
    finally:
        module.write_text(source)


def test_an_edited_job_script_reruns_its_jobs(copy, workdir):
    script = copy / "scripts/train.py"
    stat = script.stat()
    os.utime(script)  # Snakemake compares a script's mtime with its jobs' outputs
    try:
        assert planned(copy, workdir) == cells(2)
    finally:
        os.utime(script, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned(copy, workdir) == {}


def test_diff_counts_the_stores_another_layerlab_version_wrote(copy, workdir):
    meta = workdir / f"results/reruns/cells/{PLAIN}/train.zarr/zarr.json"
    stat, text = meta.stat(), meta.read_text()
    meta.write_text(text.replace(f'"layerlab_version": "{__version__}"', '"layerlab_version": "0.0.1"'))
    try:
        lines = diff(copy, workdir)
        assert lines[-2:] == [f"1 train.zarr written by another layerlab version (0.0.1; now {__version__}): edits "
                              f"of layerlab's library rerun nothing",
                              "2 cells: 0 changed, 0 without a store, 2 unchanged; 0 stored cells not in the study"]
    finally:
        meta.write_text(text)
        os.utime(meta, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_deleted_train_zarr_is_made_again_as_diff_says(copy, workdir):
    shutil.rmtree(workdir / f"results/reruns/cells/{PLAIN}/train.zarr")
    assert f"{PLAIN}: new (no train.zarr yet)" in diff(copy, workdir)
    assert planned(copy, workdir) == cells(1)
    smk(copy, workdir)
    assert planned(copy, workdir) == {}


def test_a_yaml_error_in_the_default_study_names_its_line(copy, tmp_path):
    config = copy / "config/config.yaml"
    text = config.read_text()
    config.write_text(text.replace("  width: 256", "  width: [256"))
    try:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "-d", str(tmp_path), "-n"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    finally:
        config.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row == "  width: 256")
    assert proc.returncode != 0
    assert re.search(rf"layerlab config error: {re.escape(str(config))}, line {line + 1}, column \d+: not valid YAML",
                     proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-2000:]
