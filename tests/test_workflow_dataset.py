"""End-to-end: a corrupted prepared dataset stops the workflow before any job, and no result is lost."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import TINY_STUDY, finished_study, private_copy, snakemake

pytestmark = pytest.mark.e2e

STUDY = {**TINY_STUDY, "grid": {"depth": [3], "loss": ["ce", "ce_lbe"]},
         "fixed": {**TINY_STUDY["fixed"], "steps": 10, "eval_every": 5, "log_every": 5}, "cells": [],
         "plots": TINY_STUDY["plots"][:1]}


def results(workdir: Path) -> dict[str, tuple[int, str]]:
    """(mtime, content hash) of every cell's train.zarr files and final.pt."""
    cells = workdir / "results/tiny/cells"
    files = [p for p in cells.rglob("*") if p.is_file() and (p.name == "final.pt" or "train.zarr" in p.parts)]
    return {str(p.relative_to(cells)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in files}


NPZ = Path("resources/datasets/digits.npz")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The study run once; each test changes a `private_copy`."""
    return finished_study(tmp_path_factory, STUDY)


def flip_a_byte(npz: Path) -> None:
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))


def test_flipped_byte_in_dataset_fails_before_any_job_and_keeps_results(finished, tmp_path):
    workdir = private_copy(finished, tmp_path)
    before = results(workdir)
    assert sum(k.endswith("final.pt") for k in before) == 2 and any("train.zarr" in k for k in before)
    npz = NPZ
    flip_a_byte(workdir / npz)

    proc = snakemake(workdir, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if f"{npz} is corrupted" in ln]
    assert lines, proc.stderr[-3000:]
    assert f"delete {npz} and {npz.with_suffix('.json')}" in lines[0] and f"`snakemake {npz}`" in lines[0]
    assert "Traceback" not in proc.stderr and "BadZipFile" not in proc.stderr.replace(lines[0], "")
    assert results(workdir) == before

    # the fix the message gives: delete both files, prepare the dataset again, rerun -> nothing is redone
    (workdir / npz).unlink()
    (workdir / npz.with_suffix(".json")).unlink()
    snakemake(workdir, str(npz))
    rerun = snakemake(workdir, "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-3000:]
    snakemake(workdir)
    assert results(workdir) == before


def test_a_flipped_byte_with_size_and_mtime_kept_is_caught_before_any_job(finished, tmp_path):
    """`touch -r`: the file keeps its size and mtime, so a (size, mtime) stamp would skip the hash; its ctime, which
    nothing sets back, does not let it."""
    workdir = private_copy(finished, tmp_path)
    snakemake(workdir, "-n")  # the copy verified: its stamp holds this copy's file times
    before, npz = results(workdir), workdir / NPZ
    stat = npz.stat()
    flip_a_byte(npz)
    os.utime(npz, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (npz.stat().st_size, npz.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    proc = snakemake(workdir, check=False)
    assert proc.returncode != 0 and f"{NPZ} is corrupted" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert "Select jobs to execute" not in proc.stdout + proc.stderr  # no job ran
    assert results(workdir) == before
