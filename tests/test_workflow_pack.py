"""Cell packs through Snakemake: pack jobs train the cells that need it, each cell's own train job takes its outputs
over, and caching stays per cell: a no-op rerun runs nothing, a changed cell reruns alone, added seeds train without
rerunning the others, a killed pack resumes its cells from their checkpoints; every store equals `fuse: false`'s."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, jobs, snakemake, write_study
from test_checkpoint import WALL_TIMES

from layerlab.core.store import read_store

pytestmark = pytest.mark.e2e

STUDY = {
    "study": "packed",
    "grid": {"seed": [0, 1, 2], "width": [16]},
    "fixed": {"dataset": "digits", "depth": 3, "steps": 30, "batch_size": 32, "log_every": 10, "eval_every": 15,
              "lr": 1e-3, "loss": "ce_lbe", "lbe_beta": 0.02},
    # a layer-wise cell (trains unfused in a pack's process) and one of another width (another fused group)
    "cells": [{"seed": 0, "width": 12, "training": "layerwise", "layer_steps": 10, "loss": "ce"},
              {"seed": 1, "width": 20}],
    "fuse": {"max_cells": 3},
}


def cells(workdir) -> list[str]:
    return sorted(str(p.parent.relative_to(workdir / "results/packed/cells"))
                  for p in (workdir / "results/packed/cells").rglob("train.zarr"))


def assert_same_stores(a, b, names: list[str]) -> None:
    for name in names:
        x, y = (read_store(w / f"results/packed/cells/{name}/train.zarr") for w in (a, b))
        assert set(x.variables) == set(y.variables), name
        for var in set(x.variables) - WALL_TIMES:
            np.testing.assert_array_equal(x[var].values, y[var].values, err_msg=f"{name}: {var}")
        weights = [torch.load(w / f"results/packed/cells/{name}/final.pt") for w in (a, b)]
        assert all(torch.equal(weights[0][k].view(-1).view(torch.uint8), weights[1][k].view(-1).view(torch.uint8))
                   for k in weights[0]), name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The study run with packs, and with `fuse: false`."""
    packed, alone = tmp_path_factory.mktemp("packed"), tmp_path_factory.mktemp("alone")
    write_study(packed, STUDY)
    write_study(alone, {**STUDY, "fuse": False})
    dry = snakemake(packed, "-n")
    snakemake(packed)
    snakemake(alone)
    return packed, alone, dry


def test_packs_train_the_cells_and_each_cell_keeps_its_job(runs):
    packed, alone, dry = runs
    counted = jobs(dry)
    assert counted["pack"] == 2 and counted["take_over"] == 5 and "train" not in counted  # 5 cells, two packs
    assert cells(packed) == cells(alone) and len(cells(packed)) == 5
    log = "\n".join(p.read_text() for p in (packed / "results/packed/logs/packs").glob("*.log"))
    assert "fused 3 cells" in log or "fused 2 cells" in log
    assert "seed~0/width~12 trains unfused: training 'layerwise' does not run in a pack" in log
    own = (packed / "results/packed/logs/train/seed~2/width~16.log").read_text()
    assert "trained in a pack of" in own and "seed~2/width~16: step 30/30" in own
    assert not list((packed / "results/packed/packs").rglob("*.pt"))  # every staged output was taken over
    assert not list((packed / "results/packed").glob("packs/*.json"))  # the manifests are temporary


def test_packed_stores_equal_unpacked_ones(runs):
    packed, alone, _ = runs
    assert_same_stores(packed, alone, cells(alone))


def test_no_op_rerun_runs_nothing_and_changes_rerun_per_cell(runs, tmp_path):
    packed, _, _ = runs
    work = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(packed), str(work)], check=True)
    assert "Nothing to be done" in snakemake(work, "-n").stdout
    changed = copy.deepcopy(STUDY)
    changed["cells"].append({"seed": 2, "width": 16, "lr": 2e-3})
    write_study(work, changed)
    counted = jobs(snakemake(work, "-n"))
    assert counted.get("train") == 1 and "pack" not in counted  # the changed cell in its own job (it has a store)
    more = copy.deepcopy(STUDY)
    more["grid"]["seed"] = [0, 1, 2, 3, 4, 5, 6]
    write_study(work, more)
    before = {c: (work / f"results/packed/cells/{c}/final.pt").stat().st_mtime_ns for c in cells(work)}
    proc = snakemake(work)
    counted = jobs(proc)
    assert counted.get("take_over") == 4 and counted.get("pack") == 2, counted  # seeds 3-6, a pack per core
    assert {c: (work / f"results/packed/cells/{c}/final.pt").stat().st_mtime_ns for c in before} == before
    assert "Nothing to be done" in snakemake(work, "-n").stdout


def test_the_readmes_training_only_command_trains_every_cell_and_nothing_else(runs, tmp_path):
    until = re.search(r"`snakemake -c2 (--until [\w ]+)`", (ROOT / "README.md").read_text())[1].split()
    write_study(tmp_path, STUDY)
    counted = jobs(snakemake(tmp_path, *until))
    assert counted == {"dataset": 1, "pack": 2, "take_over": 5}, counted
    assert cells(tmp_path) == cells(runs[0])
    assert not (tmp_path / "results/packed/metrics.zarr").exists()  # nothing measured, collected or drawn


def test_killed_pack_resumes_its_cells_with_identical_metrics(tmp_path):
    """SIGKILL Snakemake (and its pack job) once every cell of the pack has a checkpoint; rerun: each cell resumes
    from its own checkpoint and its store equals an uninterrupted unpacked run's."""
    study = {"study": "packed", "grid": {"seed": [0, 1, 2]},
             "fixed": {"dataset": "digits", "depth": 3, "width": 32, "steps": 3000, "batch_size": 32,
                       "log_every": 100, "eval_every": 1000, "lr": 1e-3},
             "checkpoint": {"every": 200}, "fuse": {"max_cells": 4}}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    write_study(killed, study)
    write_study(whole, {**study, "fuse": False})
    points = [killed / f"results/packed/checkpoints/seed~{s}/checkpoint.pt" for s in range(3)]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(killed), "--configfile",
           str(killed / "study.yaml"), "-c1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not all(p.exists() for p in points) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert all(p.exists() for p in points), "no checkpoints before the kill (or the run finished first)"
    snakemake(killed, "--unlock")
    snakemake(killed)
    pack_log = "\n".join(p.read_text() for p in (killed / "results/packed/logs/packs").glob("*.log"))
    steps = {int(s) for s in re.findall(r"resumed from step (\d+)", pack_log)}
    assert steps and all(0 < s < 3000 and s % 200 == 0 for s in steps)
    assert not any(p.exists() for p in points)  # removed once the outputs are written
    snakemake(whole)
    assert_same_stores(killed, whole, [f"seed~{s}" for s in range(3)])


def test_the_costliest_training_jobs_start_first(tmp_path):
    """On one core the training jobs run in order of estimated work (packs and cells training alone alike): a long
    job started last would run alone at the end of a study while the other cores idle."""
    write_study(tmp_path, {
        "study": "order", "grid": {"depth": [2, 6, 4], "seed": [0, 1]},
        "fixed": {"dataset": "digits", "width": 16, "steps": 10, "batch_size": 32, "log_every": 10,
                  "eval_every": 10},
        "cells": [{"depth": 3, "seed": 0, "width": 40, "optimizer": "sgd"}],  # alone, the costliest
        "fuse": {"max_cells": 2}})
    proc = snakemake(tmp_path, "-c1", "--until", "take_over", "train")
    started = re.findall(r"^(?:local)?rule (pack|train):\n(?:.*\n)*?\s+wildcards: (?:pack|cell)=(\S+)",
                         proc.stderr, re.MULTILINE)
    logs = {p.stem: p.read_text() for p in (tmp_path / "results/order/logs/packs").glob("*.log")}
    depth_of = {pack: re.search(r"depth~(\d+)/seed~0", text).group(1) for pack, text in logs.items()}
    assert [depth_of.get(name, name) for _, name in started] == ["depth~3/seed~0", "6", "4", "2"]
