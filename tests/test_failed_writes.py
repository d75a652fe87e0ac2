"""A full disk loses no training: the finished cell is checkpointed before its outputs are written, a failed write
names the file and the free space, and the rerun only writes (on a real, small tmpfs; mounting needs root)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cell, snakemake, write_study

from layerlab.core.disk import WriteFailed
from layerlab.core.store import read_store
from layerlab.nets.models import build_model
from layerlab.training import loop
from layerlab.training.checkpoint import Checkpoint
from layerlab.training.loop import train_cell
from layerlab.workflow.train_jobs import write_outputs
from layerlab.workflow.watch import ProgressFile

PAGE = 4096  # tmpfs counts whole pages


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[Path, int], None]]:
    """mount(dir, bytes): a tmpfs of that size at dir (again: resized in place), unmounted at the end."""
    mounted: list[Path] = []

    def mount(where: Path, size: int) -> None:
        where.mkdir(parents=True, exist_ok=True)
        options = f"{'remount,' if where in mounted else ''}size={size}"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                              text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()})")
        mounted.append(where)

    yield mount
    for where in dict.fromkeys(reversed(mounted)):
        subprocess.run(["umount", str(where)], check=True)


def outputs(folder: Path) -> tuple[str, str]:
    """(store, final weights) of a train job writing to `folder`."""
    return str(folder / "train.zarr/zarr.json"), str(folder / "final.pt")


def test_a_full_disk_keeps_the_training_names_the_file_and_the_rerun_only_writes(digits, tmp_path, small_disk,
                                                                                 caplog, monkeypatch):
    torch.set_num_threads(1)
    cell = make_cell(depth=3, width=8, steps=12, log_every=4, eval_every=6, lr=1e-3)
    disk, kept = tmp_path / "cells", tmp_path / "checkpoints"
    small_disk(disk, PAGE)  # final.pt (~6 kB) does not fit
    checkpoint = Checkpoint(kept, cell)
    ds, model = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"),
                           checkpoint)
    with pytest.raises(WriteFailed) as failed:
        write_outputs(ds, model, *outputs(disk), checkpoint, keep=False)
    assert str(failed.value) == (f"cannot write {disk / 'final.pt'}: the disk is full (0 B free on its file system); "
                                 f"the trained cell is kept in {kept / 'checkpoint.pt'}: free space, then rerun (it "
                                 f"only writes the outputs)")

    small_disk(disk, 3 * PAGE)  # final.pt fits, train.zarr (dozens of files) does not
    (disk / "final.pt").unlink()
    monkeypatch.setattr(loop, "Loop", None)  # the reruns train nothing
    checkpoint = Checkpoint(kept, cell)
    again, model = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes),
                              torch.device("cpu"), checkpoint)
    with pytest.raises(WriteFailed, match=rf"^cannot write {disk / 'train.zarr'}: No space left on device \("):
        write_outputs(again, model, *outputs(disk), checkpoint, keep=False)
    assert sorted(p.name for p in disk.iterdir()) == ["final.pt"]  # no partial store left behind

    small_disk(disk, 1 << 20)
    checkpoint = Checkpoint(kept, cell)
    with caplog.at_level(logging.INFO, logger="layerlab.training.checkpoint"):
        again, model = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes),
                                  torch.device("cpu"), checkpoint)
    assert "training finished at step 12" in caplog.text
    write_outputs(again, model, *outputs(disk), checkpoint, keep=False)
    assert not kept.exists()  # removed once the outputs are written
    stored = read_store(disk / "train.zarr")
    for name in ds.variables:  # every variable, the wall time included: the first run's training
        np.testing.assert_array_equal(stored[name].values, ds[name].values, err_msg=str(name))
    weights = torch.load(disk / "final.pt")
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


@pytest.mark.e2e
def test_a_full_disk_through_snakemake_loses_no_training(tmp_path, small_disk):
    """The train job on a full disk fails with one line naming the file and the free space; after space is freed
    the rerun trains nothing and writes the first run's metrics."""
    study = {"study": "full", "grid": {"depth": [3]},
             "fixed": {"dataset": "digits", "width": 8, "steps": 10, "batch_size": 64, "log_every": 5,
                       "eval_every": 5}}
    write_study(tmp_path, study)
    cells = tmp_path / "results/full/cells"
    small_disk(cells, 4 * PAGE)  # init.pt (~8.5 kB, 3 pages) fits, final.pt does not
    proc = snakemake(tmp_path, "--until", "train", check=False)
    out = proc.stdout + proc.stderr
    final, kept = "results/full/cells/depth~3/final.pt", "results/full/checkpoints/depth~3/checkpoint.pt"
    assert proc.returncode != 0
    assert (f"layerlab: cannot write {final}: the disk is full (0 B free on its file system); the trained cell is "
            f"kept in {kept}: free space, then rerun (it only writes the outputs)") in out, out[-3000:]
    assert "Traceback" not in out
    trained = torch.load(tmp_path / kept, weights_only=False)["result"]["dataset"]

    small_disk(cells, 1 << 20)
    snakemake(tmp_path, "--until", "train")
    log = (tmp_path / "results/full/logs/train/depth~3.log").read_text()
    assert f"training finished at step 10 ({kept}): only the outputs are written" in log
    stored = read_store(cells / "depth~3/train.zarr")
    for name in trained.variables:  # the wall time too: the first run's training, written
        np.testing.assert_array_equal(stored[name].values, trained[name].values, err_msg=str(name))
    assert not (tmp_path / kept).exists()


def test_a_progress_record_on_a_full_disk_does_not_stop_the_training(digits, tmp_path, small_disk, caplog):
    """The progress record only informs `layerlab.status`: a full disk under it costs a warning, not the cell."""
    torch.set_num_threads(1)
    disk = tmp_path / "progress"
    small_disk(disk, PAGE)
    (disk / "filler").write_bytes(b"x" * PAGE)  # the disk is full before the job starts
    cell = make_cell(depth=3, width=8, steps=12, log_every=4, eval_every=6, lr=1e-3)
    alone, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes), torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="layerlab.workflow.watch"):
        record = ProgressFile(disk / "depth~3.json", "depth~3", tmp_path / "cell.log")
        ds, _ = train_cell(cell, digits, build_model(cell, digits.input_shape, digits.n_classes),
                           torch.device("cpu"), writers=(record,))
    assert [r.getMessage() for r in caplog.records] == [
        f"progress record {disk / 'depth~3.json'} not written (No space left on device); training goes on"]
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no temporary left behind
    np.testing.assert_array_equal(ds["train_loss"].values, alone["train_loss"].values)
