"""`python -m layerlab.status` (layerlab.workflow.status): a real study run in the background, read mid-run (a running
cell at its step), after a failed cell and after completion; stale cells; the table within 80 columns."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, changed, make_cell, write_study

from layerlab.workflow.paths import CellFiles
from layerlab.workflow.status import LISTED, CellStatus, cell_status, main, render, study_eta, study_status
from layerlab.workflow.validate import check_study
from layerlab.workflow.watch import ProgressFile, write_json

PLUGIN = str(ROOT / "tests/plugins/fail_at.py")
STUDY = {
    "study": "watch",
    "grid": {"depth": [3, 4, 5], "seed": [0]},
    "fixed": {"dataset": "digits", "width": 32, "steps": 1500, "batch_size": 64, "log_every": 50,
              "eval_every": 500, "lr": 1e-3},
    "plugins": [PLUGIN],  # depth 5 raises at step 100 (tests/plugins/fail_at.py, LAYERLAB_TEST_FAIL_DEPTH)
    "progress_seconds": 2,
    "tensorboard": True,
    "fuse": False,  # one job per cell (a pack is tested below)
}


def statuses(workdir: Path, config: dict, cli: dict | None = None) -> dict[str, CellStatus]:
    config = {**yaml.safe_load(yaml.safe_dump(config)), **(cli or {})}  # overrides as snakemake's --config sets them
    cells = check_study(config, cli)
    return {s.cell: s for s in study_status(config, cells, workdir)}


def run_status(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    """The command in a fresh interpreter; it prints whether torch was imported after the table."""
    code = ("import sys; from layerlab.workflow.status import main; rc = main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code, "-d", str(workdir), "--configfile", str(configfile), *args],
                          capture_output=True, text=True, env=env)


def run_watched(workdir: Path, config: dict, seen: Callable[[dict[str, CellStatus]], bool],
                env: dict | None = None) -> tuple[dict[str, CellStatus] | None, str, int]:
    """Run the study with Snakemake in the background (-c1), reading its status every 0.2 s: the first status that
    `seen` accepts, Snakemake's output and exit status."""
    write_study(workdir, config)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "study.yaml"), "-c1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    mid, deadline = None, time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        now = statuses(workdir, config)
        if mid is None and seen(now):
            mid = now
        time.sleep(0.2)
    return mid, proc.communicate(timeout=600)[0], proc.returncode


def running(now: dict[str, CellStatus], past: int = 100) -> list[CellStatus]:
    return [s for s in now.values() if s.state == "running" and (s.step or 0) >= past]


@pytest.mark.e2e
def test_status_of_a_study_running_in_the_background(tmp_path):
    workdir = tmp_path / "study"
    write_study(workdir, STUDY)
    before = statuses(workdir, STUDY)
    assert {s.state for s in before.values()} == {"pending"}
    now, output, returncode = run_watched(workdir, STUDY, running, {"LAYERLAB_TEST_FAIL_DEPTH": "5"})
    assert returncode != 0, output  # the failing cell fails the run (the others are kept going)

    assert now is not None, "never saw a cell running past step 100"
    cell, table = running(now)[0], render("watch", ["depth", "seed"], list(now.values()))
    assert cell.total == 1500 and cell.step % 50 == 0 and cell.rate > 0 and cell.eta > 0
    assert cell.loss > 0 and 0 <= cell.test_acc <= 1
    label = "/".join(part.split("~")[1] for part in cell.cell.split("/"))
    row = next(line for line in table.splitlines() if line.startswith(f"{label} "))
    assert re.match(rf"{label} +running +\S+ +{cell.step}/1500 ", row), row
    assert "1 running" in table.splitlines()[0]

    after = statuses(workdir, STUDY)
    assert {c: s.state for c, s in after.items()} == {"depth~3/seed~0": "done", "depth~4/seed~0": "done",
                                                      "depth~5/seed~0": "failed"}
    failed = after["depth~5/seed~0"]
    assert failed.note == "RuntimeError: injected failure at step 100" and failed.step == 50
    assert failed.log == workdir / "results/watch/logs/train/depth~5/seed~0.log"
    done = after["depth~3/seed~0"]
    assert (done.step, done.total) == (1500, 1500) and done.fraction == 1 and done.test_acc > 0.5

    proc = run_status(workdir, workdir / "study.yaml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.splitlines()[0] == "watch  3 cells: 2 done, 1 failed"
    assert "5/0    " in out and "failed  RuntimeError: injected failure at step 100" in out
    assert f"log: {failed.log}" in out
    assert all(len(line) <= 80 for line in out.splitlines() if "log: " not in line)
    # status imports no torch (a study's plug-ins may: the failing one above does)
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in STUDY.items() if k != "plugins"}))
    proc = run_status(workdir, plain)
    assert proc.stdout.startswith("watch  3 cells: 2 done, 1 failed\n")
    assert proc.stdout.endswith("torch imported: False\n")

    # each job's console line: the first and the last step of a short cell, prefixed with the cell
    assert "depth~3/seed~0: step 0/1500 loss" in output and "depth~3/seed~0: step 1500/1500 loss" in output
    assert len(re.findall(r"depth~3/seed~0: step \d+/1500", output)) < 31  # throttled (31 logged steps)

    # a changed parameter: the trained cells are stale, naming what changed
    stale = statuses(workdir, STUDY, {"lr": 2e-3})
    assert stale["depth~3/seed~0"].state == "stale" and stale["depth~3/seed~0"].note == "lr 0.001 -> 0.002"
    assert stale["depth~5/seed~0"].state == "failed"

    # TensorBoard, live from the jobs: the finished cell's run holds its store's values
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from layerlab.core.store import read_store

    ds = read_store(workdir / "results/watch/cells/depth~3/seed~0/train.zarr")
    acc = EventAccumulator(str(workdir / "results/watch/tensorboard/depth~3/seed~0"), size_guidance={"scalars": 0})
    acc.Reload()
    assert {e.step: e.value for e in acc.Scalars("batch_entropy/layer_2")} == dict(zip(
        ds["step"].values.tolist(), ds["batch_entropy"].sel(layer=2).values.tolist(), strict=True))
    assert acc.Scalars("summary/test_acc")[0].value == pytest.approx(float(ds["test_acc"]))


@pytest.mark.e2e
def test_status_of_cells_training_in_a_pack(tmp_path):
    """Two seeds fused into one network in one pack job: each cell is running at its own step, with its own loss,
    from its own training loop; done once its train job took its outputs over."""
    study = {**STUDY, "grid": {"depth": [3], "seed": [0, 1]}, "fuse": {}, "plugins": [], "tensorboard": False}
    study["fixed"] = {**study["fixed"], "steps": 3000}
    now, output, returncode = run_watched(tmp_path, study, lambda now: len(running(now)) == 2)
    assert returncode == 0, output
    assert now is not None, "never saw both cells running"
    a, b = now["depth~3/seed~0"], now["depth~3/seed~1"]
    assert a.total == b.total == 3000 and abs(a.step - b.step) <= 50 and a.loss != b.loss  # lockstep, own values
    record = json.loads((tmp_path / "results/watch/progress/depth~3/seed~0.json").read_text())
    assert record["log"].startswith("results/watch/logs/packs/pack_") and record["state"] == "finished"
    after = statuses(tmp_path, study)
    assert [s.state for s in after.values()] == ["done", "done"] and after["depth~3/seed~1"].step == 3000
    assert "depth~3/seed~0: step 0/3000" in output and "depth~3/seed~1: step 3000/3000" in output


def test_cell_states_from_the_files_jobs_write(tmp_path):
    """Running (this machine: by pid; elsewhere: silent after a while), stopped without an error, stale."""
    root = tmp_path / "results/s"
    cell = make_cell(depth=3, lr=0.1)
    files = CellFiles(root, "depth~3")
    assert cell_status("depth~3", cell, files, time.time()).state == "pending"
    ProgressFile(files.progress, "depth~3", files.log)  # this process: alive
    status = cell_status("depth~3", cell, files, time.time())
    assert (status.state, status.note) == ("running", "starting")
    record = json.loads(files.progress.read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_json(files.progress, {**record, "state": "running", "step": 300, "total": 1000, "pid": int(dead.stdout)})
    status = cell_status("depth~3", cell, files, time.time())
    assert (status.state, status.note) == ("failed", "stopped at step 300 without an error in its log")
    write_json(files.progress, {**record, "state": "running", "step": 300, "total": 1000, "host": "node17",
                                "updated": time.time() - 3600, "interval": 10})
    status = cell_status("depth~3", cell, files, time.time())
    assert (status.state, status.note, status.fraction) == ("running", "silent 1h00m", 0.3)
    row = render("s", ["depth"], [status]).splitlines()[-1]
    assert re.fullmatch(r"3 +running █{3} +300/1000 +silent 1h00m", row) and len(row) <= 80
    files.store.parent.mkdir(parents=True)
    files.store.write_text(json.dumps({"attributes": {"config": changed(cell, lr=0.01).json},
                                       "zarr_format": 3, "node_type": "group"}))
    status = cell_status("depth~3", cell, files, time.time())
    assert (status.state, status.note) == ("stale", "lr 0.01 -> 0.1")
    assert socket.gethostname() != "node17"


def test_a_large_study_lists_its_running_failed_and_stale_cells_within_80_columns():
    rows = [CellStatus(f"depth~{d}/loss~ce_lbe/lr~0.0001/lbe_alpha~0.5/seed~{s}", "pending")
            for d in range(50) for s in range(20)]
    for row in rows[:600]:
        row.state, row.step, row.total, row.rate = "done", 62400, 62400, 10.0
    rows[600] = CellStatus(rows[600].cell, "running", 31200, 62400, 0.000186, 0.912, 10.0, 3120.0)
    rows[601] = CellStatus(rows[601].cell, "failed", note="RuntimeError: CUDA out of memory. Tried to allocate "
                           "20.00 GiB (GPU 0; 79.15 GiB total capacity)", log=Path("results/x/logs/train/a.log"))
    rows[602].state, rows[602].note = "stale", "lr 0.0001 -> 0.001"
    table = render("batch_entropy_sweep_paper", ["depth", "loss", "lr", "lbe_alpha", "seed"], rows)
    lines = table.splitlines()
    assert lines[:2] == ["batch_entropy_sweep_paper",  # the study and its tally on two lines where one is too short
                         "1000 cells: 600 done, 1 running, 1 failed, 1 stale, 397 pending"]
    assert re.search(r"60%  ETA +\S+$", lines[2])  # 600.5 of 1,000 cells; 1 running at 10 steps/s
    assert len(lines) == 4 + 1 + 2 + 1 + 1 and lines[-1] == "(600 done, 397 pending not listed: --all lists every cell)"
    assert all(len(line) <= 80 for line in lines if "log: " not in line)
    assert re.search(r" running █{5} +31200/62400 1\.9e-04  0\.912      10 52m00s$", lines[4]), lines[4]
    assert lines[5].endswith("…") and lines[6].strip() == "log: results/x/logs/train/a.log"
    assert "stale   lr 0.0001 -> 0.001" in lines[7]
    assert len(render("s", ["depth"], rows, every=True).splitlines()) == 3 + 1000 + 1
    assert LISTED < 1000


def test_study_eta_is_the_pace_of_the_running_cells_but_no_sooner_than_the_slowest_ends():
    def cell(name: str, step: int, rate: float, state: str = "running") -> CellStatus:
        return CellStatus(name, state, step, 2000, rate=rate, eta=(2000 - step) / rate)

    packs = [cell("fast", 1000, 10.0), cell("slow", 1000, 1.0), cell("saved", 2000, 50.0)]  # the last one is saving
    assert study_eta(packs) == 1000.0  # the slow cell's own ETA, not 1.0 cell / (0.0055 cells/s) = 182 s
    queue = [cell("a", 0, 2.0), cell("b", 0, 2.0), *[CellStatus(f"p{i}", "pending") for i in range(8)]]
    assert study_eta(queue) == 10 / (2 * 2.0 / 2000)  # 10 cells at 2 cells per 1000 s: 5000 s
    assert study_eta([CellStatus("p", "pending")]) != study_eta([CellStatus("p", "pending")])  # NaN: none runs
    assert study_eta([CellStatus("d", "done", 2000, 2000)]) == 0.0


def test_a_bad_study_is_one_line(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"study": "s", "grid": {"depht": [3]}}))
    assert main(["--configfile", str(study), "-d", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerlab config error: grid: unknown axis 'depht'") and "\n" not in err
