"""Resumable training (layerlab.training.checkpoint): a run stopped at step k and resumed equals an uninterrupted one,
in every regime and with the stateful probes; stale and corrupt checkpoints are reported and training starts fresh."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import ROOT, changed, make_cell, snakemake, write_study

from layerlab.core.registry import load_plugins
from layerlab.core.store import read_store
from layerlab.nets.models import build_model
from layerlab.probes.base import takes_from_run
from layerlab.probes.grad_rms import GradRMSProbe
from layerlab.training import loop
from layerlab.training.checkpoint import Checkpoint, Interrupted
from layerlab.training.loop import train_cell

WALL_TIMES = {"train_seconds", "curvature_seconds", "representation_dynamic_seconds", "k_filter_seconds"}


class StopAt(Checkpoint):
    """A checkpoint that behaves as if SIGTERM arrived just before step `k`."""

    def __init__(self, directory, cell, k: int):
        super().__init__(directory, cell)
        self.k = k

    def due(self, step: int) -> bool:
        if step == self.k:
            self.stop = 15
        return super().due(step)


def train(cell: dict, data, checkpoint: Checkpoint | None = None) -> tuple[xr.Dataset, dict]:
    torch.set_num_threads(1)
    model = build_model(cell, data.input_shape, data.n_classes)
    ds, model = train_cell(cell, data, model, torch.device("cpu"), checkpoint)
    return ds, model.state_dict()


def assert_identical(a: tuple[xr.Dataset, dict], b: tuple[xr.Dataset, dict]) -> None:
    (ds_a, weights_a), (ds_b, weights_b) = a, b
    assert set(ds_a.variables) == set(ds_b.variables)
    for name in set(ds_a.variables) - WALL_TIMES:
        np.testing.assert_array_equal(ds_a[name].values, ds_b[name].values, err_msg=name)
        assert ds_a[name].attrs == ds_b[name].attrs, name
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


CELLS = {
    "lbe": dict(loss="ce_lbe", depth=5, lbe_beta=0.01),
    "sgd_milestones_crop_flip": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, lr_milestones=[8],
                                     augment="crop_flip", bn_variant="bn_gamma_beta", weight_decay=1e-4),
    "layerwise_mid_stage": dict(training="layerwise", depth=3, layer_steps=10, input_dropout=0.2, grad_dropout=0.3,
                                layer_lr_decay=0.8, optimizer="sgd", lr=0.05, momentum=0.9, grad_rms_probe=True),
    "random_robin_second_round": dict(training="random_robin", depth=3, layer_steps=4, rounds=2, input_dropout=0.2,
                                      grad_dropout=0.3, layer_lr_decay=0.8, optimizer="sgd", lr=0.05, momentum=0.9,
                                      lr_milestones=[6], grad_rms_probe=True, bn_variant="bn"),
    "round_robin_adam": dict(training="round_robin", depth=3, layer_steps=5, rounds=2, layer_head="linear"),
    "decision_blocks_fitted": dict(training="layerwise", model="cnn", depth=3, width=4, layer_steps=10,
                                   layer_head="decision_block", memory_target=0.5, decision_channels=8),
    "partitionwise_filters": dict(training="partitionwise", segment_size=2, layer_steps=10, loss_filter=0.25,
                                  k_filter=3, k_filter_batch=500, filter_from=2, optimizer="sgd", lr=0.05,
                                  momentum=0.9),
    "curvature": dict(curvature_every=5, curvature_labels="sampled", curvature_samples=100, weight_entropy_bits=4,
                      quantize_bits=6, quantize_every=3),
    "representation_k_filter": dict(representation_every=5, representation_at=[3, 13], representation_samples=200,
                                    representation_k=5, k_filter=3, k_filter_batch=500, bn_variant="bn"),
}


@pytest.mark.parametrize("name", CELLS)
def test_resumed_run_equals_uninterrupted(name, digits, tmp_path, caplog):
    cell = make_cell(**{"depth": 4, "width": 16, "steps": 20, "batch_size": 64, "log_every": 5, "eval_every": 10,
                        "lr": 1e-3, **CELLS[name]})
    # layer-wise: step 7 of the second stage; round robin: in the second round (stage 4), whose layer's optimizer,
    # head and schedule were last used a round earlier
    k = {"layerwise_mid_stage": 17, "random_robin_second_round": 17, "round_robin_adam": 22,
         "decision_blocks_fitted": 17, "partitionwise_filters": 17}.get(name, 12)
    whole = train(cell, digits)
    with pytest.raises(Interrupted, match=f"at step {k}; rerun to resume"):
        train(cell, digits, StopAt(tmp_path, cell, k))
    assert (tmp_path / "checkpoint.pt").exists()
    with caplog.at_level(logging.INFO, logger="layerlab.training.checkpoint"):
        resumed = train(cell, digits, Checkpoint(tmp_path, cell))
    assert f"resumed from step {k}" in caplog.text
    assert_identical(whole, resumed)


def test_interval_checkpoints_and_a_stale_or_corrupt_one_starts_fresh(digits, tmp_path, caplog):
    cell = make_cell(depth=3, width=8, steps=12, log_every=4, eval_every=6, lr=1e-3)
    tmp_path = tmp_path / "checkpoints" / "depth~3"  # a cell's folder: removed with its last checkpoint
    whole = train(cell, digits)
    with pytest.raises(Interrupted):
        train(cell, digits, StopAt(tmp_path, cell, 8))
    other = changed(cell, lr=2e-3)
    with caplog.at_level(logging.INFO, logger="layerlab.training.checkpoint"):
        fresh = train(other, digits, Checkpoint(tmp_path, other))
    assert "training starts fresh: it belongs to" in caplog.text
    assert_identical(fresh, train(other, digits))  # nothing of the other cell's state was mixed in
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="layerlab.training.checkpoint"):
        again = train(cell, digits, Checkpoint(tmp_path, cell, every=4))
    assert "it cannot be read" in caplog.text and "checkpoint at step 4" in caplog.text
    assert "checkpoint at step 8" in caplog.text
    assert_identical(whole, again)
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # the last one: the finished cell
    assert kept["step"] == 12 and set(kept["result"]) == {"dataset", "model"}
    Checkpoint(tmp_path, cell).remove()
    assert not tmp_path.exists()  # the cell's folder goes with its last checkpoint


def test_a_finished_cell_in_its_checkpoint_is_returned_without_training(digits, tmp_path, caplog, monkeypatch):
    """The finished result is checkpointed before any output is written: the rerun after a failed write trains
    nothing (no Loop is built) and returns the same metrics and weights."""
    cell = make_cell(depth=3, width=8, steps=12, log_every=4, eval_every=6, lr=1e-3, grad_rms_probe=True)
    whole = train(cell, digits, Checkpoint(tmp_path, cell))
    monkeypatch.setattr(loop, "Loop", None)  # building one would fail
    with caplog.at_level(logging.INFO, logger="layerlab.training.checkpoint"):
        again = train(cell, digits, Checkpoint(tmp_path, cell))
    assert f"training finished at step 12 ({tmp_path / 'checkpoint.pt'}): only the outputs are written" in caplog.text
    np.testing.assert_array_equal(whole[0]["train_seconds"], again[0]["train_seconds"])  # not even the wall time
    assert_identical(whole, again)


def test_probe_state_is_every_attribute_but_what_it_takes_from_the_run(digits):
    cell = make_cell(depth=3, width=8, steps=12, curvature_every=4, neuron_every=4, grad_rms_probe=True)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    built = loop.Loop(cell, digits, model)
    probes = dict(zip(built.names, built.probes, strict=True))
    assert set(probes["grad_rms"].state_dict()) == {"records"}  # not the layers (modules) nor the cell
    assert set(probes["curvature"].state_dict()) == {"schedule", "generator", "steps", "records", "seconds"}  # not x, y
    assert set(probes["neuron_states"].state_dict()) == {"schedule", "dying", "full"}  # not x, a view of the data
    assert set(probes["memory"].state_dict()) == {"n_layers", "stages", "backprop"}  # not the fixed batch
    assert takes_from_run([torch.zeros(1), torch.zeros(2)]) and not takes_from_run([])  # empty: records to come


def test_a_plugin_probe_resumes_bit_identically_without_declaring_its_state(digits, tmp_path, caplog):
    """docs/PLUGINS.md's worked example (tests/plugins/grad_norm.py) keeps its records in a plain attribute: stopped
    before step 12 and resumed, every record before the checkpoint is there, equal to an uninterrupted run's."""
    load_plugins([str(ROOT / "tests/plugins/grad_norm.py")])
    cell = make_cell(depth=3, width=16, steps=20, batch_size=64, log_every=5, eval_every=10, lr=1e-3,
                     grad_norm_probe=True)
    whole = train(cell, digits)
    with pytest.raises(Interrupted, match="at step 12; rerun to resume"):
        train(cell, digits, StopAt(tmp_path, cell, 12))
    with caplog.at_level(logging.INFO, logger="layerlab.training.checkpoint"):
        resumed = train(cell, digits, Checkpoint(tmp_path, cell))
    assert "resumed from step 12" in caplog.text
    assert_identical(whole, resumed)
    norms = resumed[0]["grad_norm"]
    assert np.isfinite(norms.sel(step=[0, 5, 10, 15])).all() and np.isnan(norms.sel(step=20)).all()


def test_a_probe_that_cannot_be_checkpointed_turns_checkpoints_off_with_a_warning(digits, tmp_path, caplog,
                                                                                   monkeypatch):
    build = GradRMSProbe.__init__

    def with_a_lock(self, *args):
        build(self, *args)
        self.lock = threading.Lock()  # cannot be pickled

    monkeypatch.setattr(GradRMSProbe, "__init__", with_a_lock)
    cell = make_cell(depth=3, width=8, steps=12, log_every=4, eval_every=6, lr=1e-3, grad_rms_probe=True)
    whole = train(cell, digits)
    stopped = r"at step 8; no checkpoint \(training probe 'grad_rms' keeps 'lock'.*\): a rerun starts over"
    with caplog.at_level(logging.INFO, "layerlab.training.checkpoint"), pytest.raises(Interrupted, match=stopped):
        train(cell, digits, StopAt(tmp_path, cell, 8))
    assert "no checkpoints for this cell: training probe 'grad_rms' keeps 'lock' (lock)" in caplog.text
    assert not (tmp_path / "checkpoint.pt").exists()
    assert_identical(whole, train(cell, digits, Checkpoint(tmp_path, cell, every=4)))  # the run itself is unchanged


@pytest.mark.e2e
def test_killed_snakemake_resumes_the_cell_with_identical_metrics(tmp_path):
    """SIGKILL the whole Snakemake process group after a checkpoint, --unlock, rerun: the cell resumes (its log says
    from which step) and its train.zarr equals an uninterrupted run's."""
    study = {"study": "resume", "grid": {"depth": [3]},
             "fixed": {"dataset": "digits", "width": 32, "steps": 4000, "batch_size": 32, "log_every": 100,
                       "eval_every": 1000, "lr": 1e-3},
             "checkpoint": {"every": 200}}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for workdir in (killed, whole):
        write_study(workdir, study)
    checkpoint = killed / "results/resume/checkpoints/depth~3/checkpoint.pt"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(killed), "--configfile",
           str(killed / "study.yaml"), "-c1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "no checkpoint before the kill (or the run finished first)"
    assert not (killed / "results/resume/cells/depth~3/train.zarr/zarr.json").exists()  # no store where a reader looks
    snakemake(killed, "--unlock")
    snakemake(killed)
    log = (killed / "results/resume/logs/train/depth~3.log").read_text()
    step = int(re.search(r"resumed from step (\d+)", log).group(1))
    assert 0 < step < 4000 and step % 200 == 0
    assert not checkpoint.exists()  # removed once the outputs are written
    snakemake(whole)
    a, b = (read_store(w / "results/resume/cells/depth~3/train.zarr") for w in (killed, whole))
    for name in set(a.variables) - WALL_TIMES:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
