"""The local GPU pool (layerlab.workflow.gpus), exercised with fake device lists: no GPU needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import snakemake, write_study

from layerlab.workflow import gpus


def test_resolve_explicit_and_auto(monkeypatch):
    assert gpus.resolve({"devices": [0, 2], "slots_per_gpu": 3}) == (["0", "2"], 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert gpus.resolve({}) == (["1", "3"], 1)
    assert gpus.resolve(None) == (["1", "3"], 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.detect() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPUs, a CPU run
    assert gpus.resolve({"devices": "auto"}) == ([], 1)


def test_jobs_spread_over_devices_then_share_slots(tmp_path):
    locks = [gpus.acquire(["0", "1"], 2, tmp_path) for _ in range(4)]
    assert [(d, s) for d, s, _ in locks] == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    with pytest.raises(TimeoutError):
        gpus.acquire(["0", "1"], 2, tmp_path, timeout=0.2, poll=0.05)
    locks[1][2].close()  # a job ends: its slot is free again
    assert gpus.acquire(["0", "1"], 2, tmp_path, timeout=1)[:2] == ("1", 0)


def test_claim_sets_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_held", [])
    env = {**gpus.export(["5", "7"], 1, tmp_path)}
    assert gpus.claim(env) == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert gpus.claim(env) == "5"  # idempotent within a process
    monkeypatch.setattr(gpus, "_held", [])
    assert gpus.claim(dict(env)) == "7"  # another process: the other device
    monkeypatch.setattr(gpus, "_held", [])
    assert gpus.claim({}) is None  # no pool: CPU
    assert gpus.claim({**env, "SLURM_JOB_ID": "1"}) is None  # SLURM binds devices itself


CHILD = """
import os, sys, time
from layerlab.workflow import gpus
env = dict(os.environ)
dev = gpus.claim(env)
print(dev, env["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[1]))
"""


def test_concurrent_processes_get_distinct_slots_and_a_killed_one_frees_its_slot(tmp_path):
    env = {**os.environ, **gpus.export(["0", "1"], 1, tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, "30"], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        got = [p.stdout.readline().split()[0] for p in procs]
        assert sorted(got) == ["0", "1"]
        # a third job waits for a slot; killing a holder frees it (the flock dies with the process)
        waiter = subprocess.Popen([sys.executable, "-c", CHILD, "0"], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiter.poll() is None
        procs[0].kill()
        procs[0].wait()
        out, _ = waiter.communicate(timeout=30)
        dev, visible = out.split()
        assert dev == visible == got[0]
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.e2e
def test_workflow_training_jobs_claim_pool_slots(tmp_path, tiny_config):
    """The Snakefile exports the config's pool and each training job claims a slot (fake ids: torch sees no GPU)."""
    tiny_config["grid"] = {"depth": [3], "loss": ["ce", "ce_lbe"]}
    tiny_config["cells"] = []
    tiny_config["plots"] = tiny_config["plots"][:1]
    tiny_config["gpus"] = {"devices": [7, 9], "slots_per_gpu": 1}
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, "--resources", "gpu=2")
    assert "gpu=1" in proc.stdout + proc.stderr  # training jobs declare one GPU when a pool exists
    locks = sorted(p.name for p in (tmp_path / ".snakemake/layerlab-gpu-locks").iterdir())
    assert locks and set(locks) <= {"gpu7.slot0.lock", "gpu9.slot0.lock"}
    assert "gpu7.slot0.lock" in locks
