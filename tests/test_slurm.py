"""End-to-end on a real single-node SLURM cluster (munge, slurmctld, slurmd, slurmdbd + mariadb for sacct), started
here by scripts/slurm/start-slurm.sh and stopped by PID at the end: the study store from profiles/slurm equals a
local run's, and a cancelled cluster job is retried and the store is complete. Needs root and Debian's slurm
packages (.ci/run installs them; start-slurm.sh installs missing ones when apt-get is there); skipped otherwise."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
from conftest import ROOT, snakemake, write_study

from layerlab.core.store import read_store

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

SLURM_DIR = Path(os.environ.get("LAYERLAB_SLURM_DIR", "/tmp/layerlab-slurm-test"))
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
STUDY = {
    "study": "tiny_slurm",
    "grid": {"depth": [3], "loss": ["ce", "ce_lbe"]},
    "fixed": {"dataset": "digits", "width": 16, "steps": 20, "batch_size": 64, "log_every": 10, "eval_every": 10,
              "lr": 1e-3, "lbe_beta": 0.01},
    "plots": [{"name": "accuracy_vs_depth", "kind": "metric_vs_axis", "metric": "test_acc", "x": "depth",
               "hue": "loss"}],
}
# profiles/slurm as a user runs it; only the polling is tightened for a test (the plugin waits 40 s by default)
PROFILE_ARGS = ("--profile", str(ROOT / "profiles/slurm"), "--slurm-init-seconds-before-status-checks", "2",
                "--latency-wait", "5")


def installed(pkg: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return "ok installed" in out.stdout


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("LAYERLAB_SKIP_SLURM"):
        pytest.skip("LAYERLAB_SKIP_SLURM is set")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("starting a SLURM cluster needs root")
    if not shutil.which("dpkg-query"):
        pytest.skip("not a Debian system (the SLURM test uses Debian's slurm-wlm packages)")
    if not all(installed(p) for p in PACKAGES) and not shutil.which("apt-get"):
        pytest.skip("SLURM packages missing and no apt-get to install them")
    pytest.importorskip("snakemake_executor_plugin_slurm")
    env = {**os.environ, "SLURM_CI_DIR": str(SLURM_DIR)}
    stop = [str(ROOT / "scripts/slurm/stop-slurm.sh"), "--purge"]
    # one cluster per machine (fixed ports, /etc/slurm): concurrent test sessions take turns
    lock = open(f"{SLURM_DIR}.lock", "w")  # held until the finalizer
    fcntl.flock(lock, fcntl.LOCK_EX)
    subprocess.run(stop, env=env, capture_output=True)  # leftovers of an aborted run
    try:
        start = subprocess.run([str(ROOT / "scripts/slurm/start-slurm.sh")], env=env, capture_output=True, text=True,
                               timeout=600)
        if start.returncode != 0:
            raise AssertionError(f"start-slurm.sh failed:\n{start.stdout[-3000:]}\n{start.stderr[-3000:]}")
        yield env
    finally:  # stops the daemons by their PID files, even when the start or a test failed
        out = subprocess.run(stop, env=env, capture_output=True, text=True)
        print(out.stdout)
        lock.close()


SACCT_FIELDS = ("JobID", "State", "AllocTRES", "Comment", "Timelimit", "Submit")


def sacct_jobs(since: str = "now-1hour") -> list[dict[str, str]]:
    """Allocations (no steps) submitted since `since` (sacct --starttime syntax), oldest first."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "--starttime", since, "-o", ",".join(SACCT_FIELDS)],
                         capture_output=True, text=True, check=True).stdout
    print(out)  # the report's evidence
    return [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.splitlines() if line]


def now() -> str:
    """Now, for sacct --starttime (whole seconds: a job submitted this second is included)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def drop_timings(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars([v for v in ds.variables if str(v).endswith("_seconds")])


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("slurm")
    write_study(workdir, STUDY)
    t0 = time.monotonic()
    snakemake(workdir, *PROFILE_ARGS, env=cluster)
    print(f"SLURM run of {STUDY['study']}: {time.monotonic() - t0:.1f} s")
    return workdir


def test_slurm_profile_store_equals_local_run(slurm_run, tmp_path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    remote = read_store(slurm_run / "results/tiny_slurm/metrics.zarr")
    local = read_store(tmp_path / "results/tiny_slurm/metrics.zarr")
    xr.testing.assert_identical(drop_timings(remote), drop_timings(local))
    # the jobs really ran in SLURM, and training jobs got one (fake) GPU each from the profile's gpu=1
    jobs = sacct_jobs()
    assert sum(j["State"] == "COMPLETED" for j in jobs) >= 4  # dataset, the train bundle, collect, plots
    assert sum("gres/gpu=1" in j["AllocTRES"] for j in jobs) >= 1


def test_cancelled_cluster_job_is_retried_and_store_complete(slurm_run, cluster):
    workdir = slurm_run
    config = {**STUDY, "cells": [{"depth": 4, "loss": "ce", "steps": 5000, "log_every": 1000, "eval_every": 5000}]}
    write_study(workdir, config)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "study.yaml"), *PROFILE_ARGS]
    log = workdir / "results/tiny_slurm/logs/train/depth~4/loss~ce.log"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**cluster, "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 180
        while not (log.exists() and "training" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert log.exists(), "training job did not start"
        running = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True,
                                 check=True).stdout.split()
        assert running, "no running SLURM job to cancel"
        subprocess.run(["scancel", *running], check=True)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-6000:]
    states = {j["JobID"]: j["State"] for j in sacct_jobs()}
    assert any(states.get(j, "").startswith("CANCELLED") for j in running), states
    ds = read_store(workdir / "results/tiny_slurm/metrics.zarr")
    assert ds.sizes["depth"] == 2 and int(ds["step"].max()) == 5000
    assert bool(ds["test_acc"].sel(depth=4, loss="ce").notnull())
    assert not list((workdir / "results/tiny_slurm/cells/depth~4/loss~ce").glob(".train.zarr.tmp-*"))


# the plugin's sbatch --comment: rule_<rule>_wildcards_<...>, or rule_<group>_<rules> for a bundle
TRAIN_JOB = "rule_train"  # a cell trained in a job of its own (or a bundle of them)


def start_local(workdir: Path) -> subprocess.Popen:
    """A local run (profiles/default, one core) of workdir/study.yaml in the background."""
    return subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
                             "--configfile", str(workdir / "study.yaml"), "-c1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]


def test_sixteen_cells_go_to_slurm_in_one_training_job(cluster, tmp_path):
    """The 16 cells of a study that fuse (seed and loss are per-model) go to SLURM as one pack: one sbatch job on one
    GPU, their take-overs on the submitting machine; the store equals a local unpacked (one job per cell) run's."""
    study = {**STUDY, "study": "bundle16", "grid": {"depth": [3, 4], "loss": ["ce", "ce_lbe"], "seed": [0, 1, 2, 3]},
             "fixed": {**STUDY["fixed"], "steps": 10, "eval_every": 10, "log_every": 5}, "plots": []}
    remote, local = tmp_path / "slurm", tmp_path / "local"
    write_study(remote, study)
    write_study(local, {**study, "fuse": False})
    since = now()
    local_run = start_local(local)  # the reference, meanwhile
    snakemake(remote, *PROFILE_ARGS, env=cluster)
    finish(local_run)
    jobs = sacct_jobs(since)
    assert not [j for j in jobs if j["Comment"].startswith(TRAIN_JOB)], jobs  # no cell trained on its own
    packs = [j for j in jobs if j["Comment"].startswith("rule_pack")]
    assert len(packs) == 1 and packs[0]["State"] == "COMPLETED" and "gres/gpu=1" in packs[0]["AllocTRES"], packs
    assert packs[0]["Timelimit"] == "16:00:00", packs  # the profile's pack runtime: 16 cells x 60 minutes
    a = read_store(remote / "results/bundle16/metrics.zarr")
    b = read_store(local / "results/bundle16/metrics.zarr")
    assert a.sizes["seed"] == 4 and a.sizes["depth"] == 2 and a.sizes["loss"] == 2
    xr.testing.assert_identical(drop_timings(a), drop_timings(b))


def test_cell_longer_than_its_time_limit_resumes_after_timeout(cluster, tmp_path):
    """A ~2-minute training under a 1-minute limit: SLURM's SIGTERM makes it checkpoint, the retry resumes there,
    and the metrics equal an uninterrupted local run's."""
    study = {**STUDY, "study": "timeout", "grid": {"depth": [6], "loss": ["ce"]}, "plots": [],
             "fixed": {**STUDY["fixed"], "width": 256, "batch_size": 128, "steps": 12000, "log_every": 1000,
                       "eval_every": 4000},
             "checkpoint": {"every": 0, "minutes": 0.2, "keep": False}}
    remote, local = tmp_path / "slurm", tmp_path / "local"
    for workdir in (remote, local):
        write_study(workdir, study)
    since = now()
    local_run = start_local(local)  # the reference, meanwhile
    # a command-line --set-resources replaces the profile's whole set-resources (train then has no gpu, and no
    # --signal=TERM@120, which would exceed a 1-minute limit anyway): this is SLURM's own SIGTERM at the limit
    snakemake(remote, *PROFILE_ARGS, "--set-resources", "train:runtime=1", "train:slurm_extra=''", "--retries", "6",
              env=cluster)
    finish(local_run)
    train = [j for j in sacct_jobs(since) if j["Comment"].startswith(TRAIN_JOB)]
    states = [j["State"] for j in train]
    assert len(states) >= 2 and states[-1] == "COMPLETED" and set(states[:-1]) == {"TIMEOUT"}, train
    log = (remote / "results/timeout/logs/train/depth~6/loss~ce.log").read_text()
    assert "resumed from step" in log, log[-3000:]
    a = read_store(remote / "results/timeout/metrics.zarr")
    b = read_store(local / "results/timeout/metrics.zarr")
    assert int(a["step"].max()) == 12000
    xr.testing.assert_identical(drop_timings(a), drop_timings(b))
