"""End-to-end: a corrupted prepared dataset stops the workflow before any job, and no result is lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import TINY_STUDY, snakemake, write_study

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


def test_flipped_byte_in_dataset_fails_before_any_job_and_keeps_results(tmp_path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    before = results(tmp_path)
    assert sum(k.endswith("final.pt") for k in before) == 2 and any("train.zarr" in k for k in before)
    npz = Path("resources/datasets/digits.npz")
    raw = bytearray((tmp_path / npz).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / npz).write_bytes(bytes(raw))

    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if f"{npz} is corrupted" in ln]
    assert lines, proc.stderr[-3000:]
    assert f"delete {npz} and {npz.with_suffix('.json')}" in lines[0] and f"`snakemake {npz}`" in lines[0]
    assert "Traceback" not in proc.stderr and "BadZipFile" not in proc.stderr.replace(lines[0], "")
    assert results(tmp_path) == before

    # the fix the message gives: delete both files, prepare the dataset again, rerun -> nothing is redone
    (tmp_path / npz).unlink()
    (tmp_path / npz.with_suffix(".json")).unlink()
    snakemake(tmp_path, str(npz))
    rerun = snakemake(tmp_path, "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-3000:]
    snakemake(tmp_path)
    assert results(tmp_path) == before
