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

from layerlab.store import read_store

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


def sacct_jobs() -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-a", "--starttime", "now-1hour", "-o",
                          "JobID,State,AllocTRES,Comment"], capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


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
    assert sum(state == "COMPLETED" for _, state, _, _ in jobs) >= 6  # dataset, 2 init, 2 train, collect, plots
    assert sum("gres/gpu=1" in tres for _, _, tres, _ in jobs) >= 2


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
    states = {job: state for job, state, _, _ in sacct_jobs()}
    assert any(states.get(j, "").startswith("CANCELLED") for j in running), states
    ds = read_store(workdir / "results/tiny_slurm/metrics.zarr")
    assert ds.sizes["depth"] == 2 and int(ds["step"].max()) == 5000
    assert bool(ds["test_acc"].sel(depth=4, loss="ce").notnull())
    assert not list((workdir / "results/tiny_slurm/cells/depth~4/loss~ce").glob(".train.zarr.tmp-*"))
