"""Study-level figures of merit derived from the combined store."""

from __future__ import annotations

import numpy as np
import xarray as xr

from layerlab.core.cell import Cell

PREDICTORS = {"": "cutoff_depth", "_diff_entropy": "cutoff_depth_diff_entropy"}  # variable suffix -> its cutoff


def add_cascade_prediction(ds: xr.Dataset, cell: Cell, is_source: bool) -> xr.Dataset:
    """Paper 003's predictions for one cell from the cutoffs of its deepest sibling: trainable iff depth <= l*
    (relative entropy), and iff depth <= l*_S (differential entropy).

    The cost ratio (cascade time / training time of the same network) is defined on the deepest cell only.
    """
    for suffix, cutoff in PREDICTORS.items():
        ds[f"predicted_trainable{suffix}"] = xr.DataArray(cell.model.depth <= int(ds[cutoff]))
    ds["cost_ratio"] = xr.DataArray(float(ds["cascade_seconds"] / ds["train_seconds"]) if is_source else np.nan)
    return ds


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
