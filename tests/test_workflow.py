"""End-to-end: the real Snakemake workflow on a tiny digits grid; caching, reruns, reliability."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import ROOT, TINY_STUDY, finished_study, private_copy, snakemake, trained, write_study

from layerlab.core.config import expand_cells
from layerlab.core.store import read_store

pytestmark = pytest.mark.e2e


def outputs(workdir: Path) -> dict[str, float]:
    """mtime of every job output of the study (per-cell files, study store, table, figures)."""
    base = workdir / "results/tiny"
    paths = [p for p in base.rglob("*") if p.name in ("init.pt", "train.zarr", "metrics.zarr", "summary.csv")
             or p.suffix == ".png"]
    return {str(p.relative_to(base)): p.stat().st_mtime_ns for p in paths}


def changed(before: dict[str, float], after: dict[str, float]) -> set[str]:
    return {k for k in after if before.get(k) != after[k]}


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    return finished_study(tmp_path_factory, TINY_STUDY)


@pytest.fixture
def workdir(completed, tmp_path) -> Path:
    return private_copy(completed, tmp_path)


def test_study_store_has_grid_axes_as_dims(completed):
    ds = read_store(completed / "results/tiny/metrics.zarr")
    assert dict(ds["test_acc"].sizes) == {"depth": 3, "loss": 2}
    assert ds["batch_entropy"].dims == ("depth", "loss", "step", "layer")
    # logged steps, plus the step at which the diverging cell stopped (NaN for the other cells)
    stop = int(ds["diverged_step"].sel(depth=5, loss="ce"))
    assert ds.sizes["layer"] == 5 and list(ds["step"].values) == sorted({0, 10, 20, 30, stop})
    assert stop in (0, 10, 20, 30) or np.isnan(ds["ce"].sel(depth=3, loss="ce", step=stop))
    assert list(ds["depth"].values) == [3, 4, 5] and list(ds["loss"].values) == ["ce", "ce_lbe"]
    # depth 3 has 3 hidden layers: layers 3, 4 are padding
    assert np.isnan(ds["batch_entropy"].sel(depth=3, loss="ce").isel(layer=[3, 4])).all()
    assert np.isfinite(ds["batch_entropy"].sel(depth=4, loss="ce", step=[0, 10, 20, 30]).isel(layer=[0, 1, 2, 3])).all()
    # alpha lives only on LBE cells' regularized (middle) layers
    assert np.isnan(ds["alpha"].sel(loss="ce")).all()
    assert np.isfinite(ds["alpha"].sel(depth=4, loss="ce_lbe", layer=[1, 2], step=[0, 10, 20, 30])).all()
    assert np.isnan(ds["alpha"].sel(depth=4, loss="ce_lbe", layer=[0, 3])).all()
    # the non-grid combination (depth 5, ce_lbe) is absent, and the cell config travels with the data
    assert ds["config"].sel(depth=5, loss="ce_lbe").isnull()
    cfg = json.loads(str(ds["config"].sel(depth=4, loss="ce_lbe").values))
    assert cfg["depth"] == 4 and cfg["loss"] == "ce_lbe" and cfg["width"] == 16
    assert ds["test_acc"].attrs["long_name"] == "final test accuracy"
    assert 0.0 <= float(ds["test_acc"].min()) and float(ds["test_acc"].max()) <= 1.0


def test_diverging_cell_is_recorded_not_crashed(completed):
    ds = read_store(completed / "results/tiny/metrics.zarr")
    assert bool(ds["diverged"].sel(depth=5, loss="ce"))
    assert int(ds["diverged_step"].sel(depth=5, loss="ce")) >= 1
    assert not bool(ds["diverged"].sel(depth=3, loss="ce"))
    table = pd.read_csv(completed / "results/tiny/summary.csv")
    assert len(table) == 5 and set(table.columns) >= {"depth", "loss", "test_acc", "diverged", "train_seconds"}
    assert table.set_index(["depth", "loss"]).loc[(5, "ce"), "diverged"]


def test_figures_are_real_pngs(completed):
    for name in ("accuracy_vs_depth", "entropy_heatmaps", "alpha"):
        png = completed / f"results/tiny/figures/{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_per_cell_store_matches_study_store(completed):
    cell = read_store(completed / "results/tiny/cells/depth~4/loss~ce_lbe/train.zarr")
    study = read_store(completed / "results/tiny/metrics.zarr").sel(depth=4, loss="ce_lbe")
    same = study["batch_entropy"].sel(step=cell["step"], layer=cell["layer"])
    np.testing.assert_array_equal(cell["batch_entropy"].values, same.values)
    assert json.loads(cell.attrs["config"])["loss"] == "ce_lbe" and cell.attrs["cell_id"] == "depth~4/loss~ce_lbe"


def test_noop_rerun_runs_nothing(workdir):
    before = outputs(workdir)
    dry = snakemake(workdir, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    snakemake(workdir)
    assert changed(before, outputs(workdir)) == set()


def test_changing_one_cell_reruns_only_that_cell(workdir):
    before = outputs(workdir)
    old = read_store(workdir / "results/tiny/cells/depth~3/loss~ce/train.zarr")
    config = yaml.safe_load((workdir / "study.yaml").read_text())
    config["cells"].append({"depth": 3, "loss": "ce", "lr": 0.005})
    write_study(workdir, config)
    snakemake(workdir)
    assert changed(before, outputs(workdir)) == {
        "cells/depth~3/loss~ce/init.pt", "cells/depth~3/loss~ce/train.zarr", "metrics.zarr", "summary.csv",
        "figures/accuracy_vs_depth.png", "figures/entropy_heatmaps.png", "figures/alpha.png",
    }
    assert json.loads(read_store(workdir / "results/tiny/metrics.zarr")["config"].sel(depth=3, loss="ce").item())[
        "lr"] == 0.005
    # change it back: the cell reruns in a new process and reproduces the original metrics exactly
    write_study(workdir, TINY_STUDY)
    snakemake(workdir)
    again = read_store(workdir / "results/tiny/cells/depth~3/loss~ce/train.zarr")
    xr.testing.assert_identical(old.drop_vars("train_seconds"), again.drop_vars("train_seconds"))


def test_adding_a_cell_runs_only_the_new_cell(workdir):
    before = outputs(workdir)
    config = yaml.safe_load((workdir / "study.yaml").read_text())
    config["grid"]["depth"].append(6)
    write_study(workdir, config)
    snakemake(workdir)
    new = {f"cells/depth~6/loss~{loss}/{f}" for loss in ("ce", "ce_lbe") for f in ("init.pt", "train.zarr")}
    assert changed(before, outputs(workdir)) == new | {
        "metrics.zarr", "summary.csv", "figures/accuracy_vs_depth.png", "figures/entropy_heatmaps.png",
        "figures/alpha.png"}
    assert read_store(workdir / "results/tiny/metrics.zarr").sizes["depth"] == 4


def test_killed_training_job_reruns_cleanly(workdir):
    before = outputs(workdir)
    config = yaml.safe_load((workdir / "study.yaml").read_text())
    config["cells"].append({"depth": 7, "loss": "ce", "steps": 100_000, "eval_every": 100_000})
    write_study(workdir, config)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "study.yaml"), "-c1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = workdir / "results/tiny/logs/train/depth~7/loss~ce.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "training" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.exists(), "training job did not start"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cell_dir = workdir / "results/tiny/cells/depth~7/loss~ce"
    assert not list((cell_dir / "train.zarr").iterdir())  # nothing half-written where a reader looks
    config["cells"][-1]["steps"] = 20
    write_study(workdir, config)
    snakemake(workdir, "--unlock")  # a SIGKILLed Snakemake leaves its lock behind
    snakemake(workdir, "--rerun-incomplete")
    assert read_store(cell_dir / "train.zarr")["step"].values[-1] == 20
    assert not list(cell_dir.glob(".train.zarr.tmp-*"))
    after = outputs(workdir)
    assert {k for k in changed(before, after) if k.startswith("cells/")} == {
        "cells/depth~7/loss~ce/init.pt", "cells/depth~7/loss~ce/train.zarr"}
    assert read_store(workdir / "results/tiny/metrics.zarr").sizes["depth"] == 4


def test_report_has_figures_and_captions(completed):
    report = completed / "report.html"
    snakemake(completed, "--report", str(report))
    html = report.read_text()
    assert "entropy_heatmaps.png" in html and "summary.csv" in html
    assert "one heatmap per cell (x: step, y: hidden layer" in html  # the kind's caption
    assert "study.html" in html and "batch entropy H^l of each hidden layer" in html  # the variable drawn


def test_bad_config_stops_before_any_job(tmp_path, tiny_config):
    tiny_config["fixed"]["learning_rate"] = 0.1
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr and "was unexpected" in proc.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_wrong_type_and_unknown_dataset_name_the_key(tmp_path, tiny_config):
    tiny_config["grid"]["depth"] = [3, "three"]
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "'three' is not of type 'integer'" in proc.stderr and "depth" in proc.stderr
    tiny_config["grid"]["depth"] = [3]
    tiny_config["fixed"]["dataset"] = "imagenet"
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "'imagenet' is not one of" in proc.stderr
    tiny_config["fixed"]["dataset"] = "digits"
    tiny_config["grid"]["depth"] = [2]  # LBE on the middle layers of a 2-layer net: nothing to regularize
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "cell 'depth~2/loss~ce_lbe'" in proc.stderr and "needs depth >= 3" in proc.stderr
    del tiny_config["grid"]
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "'grid' is a required property" in proc.stderr


def test_missing_dataset_fails_with_how_to_get_it(tmp_path, tiny_config):
    tiny_config["fixed"]["dataset"] = "fashion_mnist"
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, check=False, env={"LAYERLAB_FASHION_MNIST_DIR": str(tmp_path / "absent")})
    assert proc.returncode != 0
    assert "layerlab: dataset 'fashion_mnist' is not prepared" in proc.stderr
    assert "apt-get install dataset-fashion-mnist" in proc.stderr
    assert not (tmp_path / "resources/datasets/fashion_mnist.npz").exists()


def test_make_claims_stops_at_a_missing_dataset_before_training(tmp_path, tiny_config):
    """`make claims` prepares every study's datasets before it trains: a dataset that the second study needs and
    cannot get stops it before the first study's cells train (not after them, hours into the run)."""
    for name in ("Snakefile", "workflow", "scripts", "src", "profiles", "envs", "pyproject.toml"):
        (tmp_path / name).symlink_to(ROOT / name)
    tiny_config["grid"]["depth"] = [3]
    write_study(tmp_path, tiny_config)
    (tmp_path / "study.yaml").rename(tmp_path / "digits.yaml")
    write_study(tmp_path, {**tiny_config, "study": "fashion", "fixed": {**tiny_config["fixed"],
                                                                       "dataset": "fashion_mnist"}})
    venv = sys.prefix  # this interpreter's environment, taken as set up (-o: `make setup` does not run)
    # not the variables of a `make test` above this one (`SLURM=1` in .ci/run would name another setup marker)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-f", str(ROOT / "Makefile"), f"VENV={venv}", "-o", f"{venv}/.installed-dev",
                           "QUICK=digits.yaml study.yaml", "claims"], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "LAYERLAB_FASHION_MNIST_DIR": str(tmp_path / "absent")})
    assert proc.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in proc.stdout
    assert "make claims: stopped before any training: study.yaml" in proc.stdout
    assert (tmp_path / "resources/datasets/digits.npz").exists()
    assert not (tmp_path / "results/tiny").exists()


@pytest.mark.parametrize("config", sorted(p.relative_to(ROOT) for p in (ROOT / "config").rglob("*.yaml")))
def test_shipped_configs_validate_and_plan(tmp_path, config):
    """Every study config in the repo passes validation and plans one train job per cell (dry run)."""
    shutil.copy(ROOT / config, tmp_path / "study.yaml")
    proc = snakemake(tmp_path, "-n")
    assert trained(proc) == len(expand_cells(yaml.safe_load((ROOT / config).read_text())))


def test_stores_open_without_warnings_and_keep_the_loss_curve(completed):
    """Stores are plain zarr folders (the job output is their zarr.json), and the per-step training loss survives
    the `loss` grid axis as `loss_value`."""
    stores = [completed / "results/tiny/metrics.zarr", *(completed / "results/tiny/cells").rglob("train.zarr")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in stores:
            xr.open_zarr(path, consolidated=False).close()
    study = read_store(stores[0])
    assert study["loss"].attrs == {} and study["loss_value"].dims == ("depth", "loss", "step")
    cell = read_store(completed / "results/tiny/cells/depth~4/loss~ce/train.zarr")
    np.testing.assert_array_equal(study["loss_value"].sel(depth=4, loss="ce", step=cell["step"]).values,
                                  cell["loss"].values)
