"""python -m layerlab.compare: shared cells of two studies, per-cell differences with seed intervals, a figure."""

from __future__ import annotations

import copy
import json
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import TINY_STUDY, snakemake, write_study
from scipy import stats

from layerlab.report.compare import compare, figure, main


def store(depths: list[int], acc: np.ndarray, lr: float, extra_axis: dict | None = None) -> xr.Dataset:
    config = np.array([[json.dumps({"lr": lr, "depth": d, "seed": s}) for s in range(3)] for d in depths], object)
    ds = xr.Dataset({"test_acc": (("depth", "seed"), acc), "config": (("depth", "seed"), config)},
                    coords={"depth": depths, "seed": [0, 1, 2]}, attrs={"axes": json.dumps(["depth", "seed"])})
    if extra_axis:
        ds = ds.expand_dims(extra_axis)
        ds.attrs["axes"] = json.dumps([*extra_axis, "depth", "seed"])
    return ds


def test_shared_cells_paired_by_seed():
    a = store([10, 30], np.array([[0.9, 0.8, 0.85], [0.1, 0.1, 0.1]]), 1e-3)
    b = store([30, 50], np.array([[0.5, 0.7, 0.6], [0.2, 0.2, 0.2]]), 1e-2, extra_axis={"width": [64]})
    table = compare(a, b)
    assert table[["depth", "metric", "n_seeds"]].values.tolist() == [[30, "test_acc", 3]]
    assert table.loc[0, ["A", "B"]].tolist() == pytest.approx([0.1, 0.6])
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert table.loc[0, ["diff", "ci_low", "ci_high"]].tolist() == pytest.approx([0.5, 0.5 - half, 0.5 + half])


def test_by_default_the_results_are_compared_quietly_in_a_compact_figure(tmp_path):
    """Wall times and memory, metrics equal everywhere and metrics without values are left out by default (named);
    a cell without a value in either study is no row; no numpy warning; one panel per metric, three to a row."""
    rng = np.random.default_rng(0)
    depths = [10, 30, 50]

    def study(shift: float) -> xr.Dataset:
        ds = store(depths, rng.uniform(0, 1, (3, 3)), 1e-3)
        for name, units in (("train_acc", "1"), ("test_loss", "nat"), ("train_loss", "nat"), ("test_error", "1"),
                            ("train_seconds", "s"), ("peak_memory_bytes", "B")):
            ds[name] = ds["test_acc"].copy(data=rng.uniform(0, 1, (3, 3)) + shift).assign_attrs(units=units)
        ds["train_rows"] = ds["test_acc"].copy(data=np.full((3, 3), 1437.0))
        ds["lbe"] = ds["test_acc"].copy(data=np.full((3, 3), np.nan))
        ds["test_acc"].loc[{"depth": 10}] = np.nan
        return ds

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = compare(study(0.0), study(0.1))
    assert sorted(set(table["metric"])) == ["test_acc", "test_error", "test_loss", "train_acc", "train_loss"]
    assert len(table) == 4 * 3 + 2  # test_acc only where depth 10 has values: it has none
    assert table.attrs == {"equal": ["train_rows"], "empty": ["lbe"]}
    figure(table, tmp_path / "compare.png", ("A", "B"))
    height, width = plt.imread(tmp_path / "compare.png").shape[:2]
    assert width <= 1600 and height <= 800  # was one 2.2-inch row per metric: 480 x 4,488 px for 34 rows


def test_unmatchable_studies_are_named():
    a = store([10], np.ones((1, 3)), 1e-3)
    with pytest.raises(ValueError, match="grid axis 'width' is only in B, with several values"):
        compare(a, store([10], np.ones((1, 3)), 1e-3).expand_dims(width=[1, 2]).assign_attrs(
            axes=json.dumps(["width", "depth", "seed"])))
    with pytest.raises(ValueError, match=r"no shared cells: grid axis 'depth' takes different values \(\[10\] vs "):
        compare(a, store([20], np.ones((1, 3)), 1e-3))
    with pytest.raises(ValueError, match="metric 'test_accuracy' is not a per-cell variable of both studies"):
        compare(a, a, ["test_accuracy"])


def test_two_tiny_studies_differing_in_lr(tmp_path, capsys):
    config = copy.deepcopy(TINY_STUDY)
    config.update(grid={"loss": ["ce", "ce_lbe"], "seed": [0, 1]}, cells=[], plots=[])
    config["fixed"] = {**config["fixed"], "depth": 3, "steps": 20}
    for name, lr in (("slow", 1e-4), ("fast", 1e-2)):
        write_study(tmp_path, {**config, "study": name, "fixed": {**config["fixed"], "lr": lr}})
        snakemake(tmp_path)
    out = tmp_path / "cmp"
    main([str(tmp_path / "results/slow"), str(tmp_path / "results/fast"), "--metric", "test_acc", "--out", str(out)])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "cells differ in: lr 0.0001 -> 0.01"
    table = pd.read_csv(out / "compare.csv")
    assert table["loss"].tolist() == ["ce", "ce_lbe"] and set(table["n_seeds"]) == {2}
    summary = {name: pd.read_csv(tmp_path / f"results/{name}/summary.csv").set_index(["loss", "seed"]).test_acc
               for name in ("slow", "fast")}
    diff = (summary["fast"] - summary["slow"]).groupby("loss").mean()
    assert table.set_index("loss")["diff"].to_dict() == pytest.approx(diff.to_dict(), abs=1e-5)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
