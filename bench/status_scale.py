"""What `python -m layerlab.status` costs on a large study mid-run: dag_scale's tiny study widened to N cells (default
1,000), one cell trained for real by Snakemake (its store, progress record and log), copied to 60 % of the cells as
`done` (each copy's recorded config rewritten to its cell's), 5 % running (live progress records of this process), 1 %
failed (a dead job's record, a `failed:` line in its log), the rest pending.

    .venv/bin/python bench/status_scale.py [--cells 1000] [--workdir DIR]

Prints the command's wall time in a fresh interpreter (median of 3, imports included) and its parts in-process:
config validation, reading the cells' files, drawing the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from dag_scale import study

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerlab.workflow.paths import CellFiles, study_dir  # noqa: E402
from layerlab.workflow.status import render, study_status  # noqa: E402
from layerlab.workflow.validate import check_study  # noqa: E402
from layerlab.workflow.watch import ProgressFile, read_progress, write_json  # noqa: E402


def prepare(workdir: Path, cells: int) -> tuple[Path, dict]:
    """The study file and its cells, one trained by Snakemake and its files spread as described above."""
    config = study("big", cells)
    path = workdir / "big.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cells = check_study(yaml.safe_load(path.read_text()))
    ids = list(cells)
    root = study_dir("big", workdir)
    first = CellFiles(root, ids[0])
    if not first.store.exists():
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
                        "--configfile", str(path), "-c1", str(first.store.relative_to(workdir))], check=True,
                       capture_output=True)
    store = json.loads(first.store.read_text())
    record = read_progress(first.progress)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    n = len(ids)
    for i, cid in enumerate(ids[1:], start=1):
        files = CellFiles(root, cid)
        if i < 0.6 * n:
            shutil.copytree(first.store.parent, files.store.parent, dirs_exist_ok=True)
            store["attributes"]["config"] = cells[cid].json
            files.store.write_text(json.dumps(store))
            write_json(files.progress, {**record, "cell": cid})
        elif i < 0.65 * n:
            ProgressFile(files.progress, cid, files.log)
            write_json(files.progress, {**read_progress(files.progress), "state": "running", "step": i % 4,
                                        "total": 4, "loss": 2.3, "test_acc": 0.1, "rate": 5.0, "eta": 1.0})
        elif i < 0.66 * n:
            files.log.parent.mkdir(parents=True, exist_ok=True)
            files.log.write_text("2026-01-01 00:00:00,000 failed: RuntimeError: injected\n")
            write_json(files.progress, {**record, "cell": cid, "state": "running", "pid": int(dead.stdout),
                                        "log_offset": 0})
    return path, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000, help="a multiple of 10")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="status_scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path, cells = prepare(workdir, args.cells)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "layerlab.status", "--configfile", str(path), "-d", str(workdir)]
    walls, out = [], ""
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        walls.append(time.perf_counter() - start)
    print(out)
    config = yaml.safe_load(path.read_text())
    start = time.perf_counter()
    cells = check_study(config)
    checked = time.perf_counter()
    rows = study_status(config, cells, workdir)
    read = time.perf_counter()
    render("big", list(config["grid"]), rows)
    drawn = time.perf_counter()
    print(f"{len(cells)} cells: python -m layerlab.status {statistics.median(walls):.2f} s (median of 3, a fresh "
          f"interpreter); in-process: config {checked - start:.3f} s, reading the cells' files {read - checked:.3f} "
          f"s, table {drawn - read:.3f} s  (work folder: {workdir})")


if __name__ == "__main__":
    main()
