"""A cell's progress while it trains (layerlab.training.progress, layerlab.workflow.watch): the log line, the throttled
console line, the progress record status reads, a resumed run's rate from its first line, failures in the log."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import make_cell
from test_checkpoint import StopAt

from layerlab.nets.models import build_model
from layerlab.training.checkpoint import Checkpoint, Interrupted
from layerlab.training.loop import train_cell
from layerlab.training.pack import build, train_pack
from layerlab.training.progress import Tick
from layerlab.workflow.watch import Console, ProgressFile, failure, job_alive, read_progress


class Ticks:
    """A progress writer that keeps what it is shown."""

    def __init__(self):
        self.ticks: list[Tick] = []
        self.final = None

    def logged(self, tick, loop):
        self.ticks.append(tick)

    def finished(self, ds):
        self.final = ds


def train(cell, data, checkpoint=None, writers=()):
    torch.set_num_threads(1)
    model = build_model(cell, data.input_shape, data.n_classes)
    return train_cell(cell, data, model, torch.device("cpu"), checkpoint, writers)[0]


CELL = dict(depth=3, width=16, steps=40, batch_size=64, log_every=5, eval_every=20, lr=1e-3)


def test_the_log_line_says_which_step_the_test_accuracy_is_from(digits, caplog):
    spy = Ticks()
    with caplog.at_level(logging.INFO, logger="layerlab.training.loop"):
        ds = train(make_cell(**CELL), digits, writers=(spy,))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == len(spy.ticks) == 9  # steps 0, 5, ..., 40
    assert re.fullmatch(r"step 25/40 loss \S+ test_acc \d\.\d{4} \(step 20\)  \S+ steps/s  ETA \S+", lines[5])
    assert [t.test_step for t in spy.ticks] == [0, 0, 0, 0, 20, 20, 20, 20, 40]
    assert spy.ticks[4].test_acc == pytest.approx(float(ds["test_acc_curve"].sel(eval_step=20)))
    assert [t.step for t in spy.ticks] == list(ds["step"].values) and spy.final is ds
    assert all(t.total == 40 and t.stage is None for t in spy.ticks)
    assert all(math.isfinite(t.rate) and t.rate > 0 for t in spy.ticks[1:])


def test_each_cell_of_a_pack_reports_its_own_progress(digits, caplog):
    """Two cells fused into one network: each one's writers see its own loop's steps, losses and final metrics."""
    torch.set_num_threads(1)
    cells = {"seed~0": make_cell(**CELL, seed=0), "seed~1": make_cell(**{**CELL, "lr": 3e-3}, seed=1)}
    spies = {name: Ticks() for name in cells}
    with caplog.at_level(logging.INFO, logger="layerlab.training.loop"):
        results = train_pack(cells, dict.fromkeys(cells, digits), {n: build(c, digits) for n, c in cells.items()},
                             torch.device("cpu"), dict.fromkeys(cells), {n: (spy,) for n, spy in spies.items()})
    assert "trains unfused" not in caplog.text  # they did fuse
    for name, spy in spies.items():
        ds = results[name][0]
        assert [t.step for t in spy.ticks] == list(ds["step"].values) and spy.final is ds
        assert [t.loss for t in spy.ticks] == pytest.approx(ds["loss"].values.tolist(), rel=1e-6)
        assert caplog.text.count(f"{name}: step ") == len(spy.ticks)  # the log lines name their cell
    assert [t.loss for t in spies["seed~0"].ticks] != [t.loss for t in spies["seed~1"].ticks]


def test_a_resumed_run_has_its_rate_and_eta_from_its_first_line(digits, tmp_path):
    cell = make_cell(**CELL)
    with pytest.raises(Interrupted):
        train(cell, digits, StopAt(tmp_path, cell, 20))
    spy = Ticks()
    train(cell, digits, Checkpoint(tmp_path, cell), (spy,))
    first = spy.ticks[0]
    assert first.step == 20 and math.isfinite(first.rate) and first.rate > 0
    assert first.eta == pytest.approx(20 / first.rate) and "nan" not in first.line() and "?" not in first.line()
    # a fresh run knows no rate at its first logged step: it says so instead of printing nan
    assert Tick(0, 40, None, 2.3, 0.1, 0, math.nan, 0.0).line().endswith("(step 0)  ? steps/s  ETA ?")


def test_console_lines_are_throttled_one_line_per_tick_prefixed_with_the_cell(digits):
    quiet, every = io.StringIO(), io.StringIO()
    train(make_cell(**CELL), digits, writers=(Console("depth~3", 3600, quiet), Console("depth~3", 0, every)))
    assert [line.split(" loss")[0] for line in quiet.getvalue().splitlines()] == [
        "depth~3: step 0/40", "depth~3: step 40/40"]  # the first and the last step
    assert len(every.getvalue().splitlines()) == 9
    diverging = io.StringIO()
    train(make_cell(**{**CELL, "optimizer": "sgd", "lr": 1e12}), digits, writers=(Console("d", 3600, diverging),))
    assert "loss nan" in diverging.getvalue().splitlines()[-1]  # the diverging step is shown, whatever the throttle


def test_the_progress_record_names_the_job_and_its_last_tick(digits, tmp_path):
    log, path = tmp_path / "cell.log", tmp_path / "progress" / "depth~3.json"
    log.write_text("an earlier job's line\n")
    record = ProgressFile(path, "depth~3", log)
    assert read_progress(path)["state"] == "starting" and read_progress(path)["log_offset"] == 22
    seen = []

    class Reader:  # reads the record as status would, while the cell trains
        def logged(self, tick, loop):
            seen.append(read_progress(path))

        def finished(self, ds):
            pass

    ds = train(make_cell(**CELL), digits, writers=(record, Reader()))
    assert [r["step"] for r in seen] == list(range(0, 41, 5)) and {r["state"] for r in seen} == {"running"}
    assert seen[5]["test_step"] == 20 and seen[5]["total"] == 40 and seen[5]["host"] == socket.gethostname()
    assert seen[0]["rate"] is None and seen[0]["eta"] is None  # NaN is null: plain JSON
    final = json.loads(path.read_text())
    assert final["state"] == "finished" and final["test_acc"] == pytest.approx(float(ds["test_acc"]))
    assert final["pid"] == os.getpid() and job_alive(final) is True
    assert not list(path.parent.glob(".*tmp*"))  # written by rename, no temporary left


def test_job_alive_by_pid_here_and_by_age_elsewhere():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = {"host": socket.gethostname(), "pid": int(proc.stdout), "updated": time.time(), "interval": 1.0}
    assert job_alive(here) is False  # that process has ended
    there = {**here, "host": "node17", "pid": 1}
    assert job_alive(there) is True
    assert job_alive(there, now=here["updated"] + 3600) is None  # silent for an hour: can't tell from here
    assert job_alive({**there, "interval": 1500.0}, now=here["updated"] + 3600) is True  # it writes every 25 min


def test_failure_is_the_last_failed_line_of_this_job(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("2026-01-01 10:00:00,000 failed: RuntimeError: the first attempt\n")
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write("2026-01-01 11:00:00,000 step 0/10 loss 2.3\n")
    assert failure(log) == "RuntimeError: the first attempt" and failure(log, offset) is None
    assert failure(tmp_path / "missing.log") is None


def test_a_job_logs_the_error_it_fails_with(tmp_path):
    """An uncaught error and an expected one (`fail`) both end up in the job's log as one `failed:` line."""
    code = ("import sys; from layerlab.workflow.jobs import log_to, fail\n"
            "log_to(sys.argv[1])\n"
            "if sys.argv[2] == 'raise': raise ValueError('bad value\\nmore detail')\n"
            "fail('dataset is corrupt: delete it')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for how, line, stderr in (("raise", "ValueError: bad value", "Traceback"),
                              ("fail", "dataset is corrupt: delete it", "layerlab: dataset is corrupt")):
        log = tmp_path / f"{how}.log"
        proc = subprocess.run([sys.executable, "-c", code, str(log), how], capture_output=True, text=True, env=env)
        assert proc.returncode == 1 and stderr in proc.stderr
        assert failure(log) == line
