"""Study-level figures of merit derived from the combined store."""

from __future__ import annotations

import numpy as np
import xarray as xr

from layerlab.catalog.measurements import CascadeParams
from layerlab.core.cell import Cell

PREDICTORS = {"": "cutoff_depth", "_diff_entropy": "cutoff_depth_diff_entropy"}  # variable suffix -> its cutoff


def add_cascade_prediction(ds: xr.Dataset, cell: Cell, is_source: bool) -> xr.Dataset:
    """Paper 003's predictions for one cell from the cutoffs of its deepest sibling: trainable iff depth <= l*
    (relative entropy), and iff depth <= l*_S (differential entropy).

    The costs are defined on the deepest cell only, whose training and cascade both ran: the cost ratio (cascade
    time / training time) and the cascade's cost in the paper's units (Sec. 2.2, Table 1: one cascade epoch against
    training epochs of the same network on the same data), cascade_epoch_cost.
    """
    for suffix, cutoff in PREDICTORS.items():
        ds[f"predicted_trainable{suffix}"] = xr.DataArray(cell.model.depth <= int(ds[cutoff]))
    ds["cost_ratio"] = xr.DataArray(float(ds["cascade_seconds"] / ds["train_seconds"]) if is_source else np.nan)
    ds["cascade_epoch_cost"] = xr.DataArray(cascade_epoch_cost(ds, cell) if is_source else np.nan)
    return ds


def cascade_epoch_cost(ds: xr.Dataset, cell: Cell) -> float:
    """Seconds of one cascade epoch over seconds of one training epoch of the same network on the same rows: the
    paper's prediction is one cascade epoch, and a quick study's small dataset needs several (`cascade_epochs`),
    so the cost of one is what compares with the paper. A training epoch is `train_rows / batch_size` steps at the
    measured time per step (train_seconds over the steps run, evaluations included)."""
    diverged = int(ds["diverged_step"])
    steps = max(diverged if diverged >= 0 else cell.run.steps, 1)
    rows = int(ds["train_rows"])
    epoch_seconds = float(ds["train_seconds"]) / steps * rows / min(cell.run.batch_size, rows)
    return float(ds["cascade_seconds"]) / cell[CascadeParams].cascade_epochs / epoch_seconds


def add_trainability(study: xr.Dataset, metric: str, threshold: float) -> xr.Dataset:
    """Ground truth `trainable` (metric >= threshold)."""
    study["trainable"] = (study[metric] >= threshold).where(study[metric].notnull())
    study["trainable"].attrs.update(long_name=f"trained {metric} >= {threshold}", units="1")
    return study


def cascade_summary(study: xr.Dataset) -> dict[str, float]:
    """Whether each cascade prediction matches the trained ground truth and whether the two predictors agree;
    the agreements (NaN cells skipped) and the median cost ratio."""
    def agrees(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
        return (a == b).where(a.notnull() & b.notnull())

    summary = {}
    for suffix in PREDICTORS:
        study[f"prediction_agrees{suffix}"] = agrees(study[f"predicted_trainable{suffix}"], study["trainable"])
        summary[f"agreement{suffix}"] = float(study[f"prediction_agrees{suffix}"].mean())
    study["predictors_agree"] = agrees(*(study[f"predicted_trainable{suffix}"] for suffix in PREDICTORS))
    return summary | {"predictors_agreement": float(study["predictors_agree"].mean()),
                      "median_cost_ratio": float(np.nanmedian(study["cost_ratio"].values))}


def study_summary(study: xr.Dataset) -> dict[str, float]:
    """One row of study-level numbers: cell counts (measurements add theirs)."""
    return {
        "cells": int(study["config"].notnull().sum()),
        "diverged": int((study["diverged"] == 1).sum()),
        "trainable": int((study["trainable"] == 1).sum()),
    }
