"""bench/gpu_check.py: its shortened studies are valid, and its whole logic runs with the CPU in the GPU's place."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check


def test_trim_grid_keeps_axes_and_caps_cells():
    grid = {"a": [1, 2, 3], "b": ["x"], "c": [True, False], "d": [5, 6]}
    assert gpu_check.trim_grid(grid, 4) == {"a": [1, 2], "b": ["x"], "c": [True, False], "d": [5]}
    assert gpu_check.trim_grid(grid, 1) == {"a": [1], "b": ["x"], "c": [True], "d": [5]}


def test_every_quick_study_shortened_is_a_valid_study():
    """Each shortened study (and the CUDA-paths study) passes the Snakefile's checks: config and cell schemas
    (with their defaults), then check_cell; at most 4 cells, 20 steps."""
    from layerlab.workflow.validate import check_study

    studies = gpu_check.quick_studies()
    assert ROOT / "config/config.yaml" in studies and not any(p.stem.endswith("_paper") for p in studies)
    assert len(studies) == 1 + len([p for p in (ROOT / "config/studies").glob("*.yaml")
                                    if not p.stem.endswith("_paper")])
    configs = [gpu_check.shorten(yaml.safe_load(p.read_text()), 20, 4) for p in studies]
    for config in [*configs, gpu_check.paths_study(20)]:
        config = {**config, "gpus": gpu_check.POOL}
        cells = check_study(config)  # the Snakefile's checks: schemas, defaults, every plug-in's constraints
        assert 1 <= len(cells) <= 4, config["study"]
        for cell in cells.values():
            assert cell.run.steps == 20 and (cell.regime.layer_steps in (None, 20)), config["study"]


def test_no_cuda_fails_with_a_clear_message(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "CUDA is not available here" in capsys.readouterr().err


@pytest.mark.e2e
def test_cpu_mode_runs_every_check(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([str(ROOT / "bench/gpu_check.sh"), "--device", "cpu", "--studies",
                           str(ROOT / "config/config.yaml"), "--skip-paths", "--parallel", "2", "--out", str(out),
                           "--datasets", str(tmp_path / "datasets")], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0 and summary["ok"], proc.stdout[-2000:] + proc.stderr[-2000:]
    cells = summary["studies"]["digits_batch_entropy"]["cells"]
    assert len(cells) == 2 and all(r["ok"] and r["loss0_cpu"] == r["loss0_accel"] for r in cells)
    assert summary["pool"]["locks"] == ["gpu0.slot0.lock", "gpu0.slot1.lock"]  # two jobs held GPU 0's slots
    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())["grid"]
    assert len(summary["speed"]["cpu"]["cells"]) == math.prod(map(len, default.values()))  # every default cell
    assert summary["determinism"]["ok"]
    packs = summary["packs"]  # the fused-vs-unfused measurement: bit for bit on the CPU
    assert packs["cells"] == 4 and packs["max_loss_deviation"] == 0.0 and packs["speedup"] > 0
    assert "PASS" in (out / "summary.md").read_text().splitlines()[0]


def test_job_setup_fixes_the_cublas_workspace_before_cuda_starts(monkeypatch):
    """torch.use_deterministic_algorithms on CUDA needs CUBLAS_WORKSPACE_CONFIG (else cuBLAS is nondeterministic)."""
    import torch

    from layerlab.workflow.runtime import setup

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setenv("LAYERLAB_DEVICE", "cpu")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        assert setup(1) == torch.device("cpu")
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
