"""Study-level figures of merit derived from the combined store."""

from __future__ import annotations

import numpy as np
import xarray as xr


def add_cascade_prediction(ds: xr.Dataset, cell: dict, is_source: bool) -> xr.Dataset:
    """Paper 003's prediction for one cell from the cutoff of its deepest sibling: trainable iff depth <= l*.

    The cost ratio (cascade time / training time of the same network) is defined on the deepest cell only.
    """
    ds["predicted_trainable"] = xr.DataArray(cell["depth"] <= int(ds["cutoff_depth"]))
    ds["cost_ratio"] = xr.DataArray(float(ds["cascade_seconds"] / ds["train_seconds"]) if is_source else np.nan)
    return ds


def add_trainability(study: xr.Dataset, metric: str, threshold: float) -> xr.Dataset:
    """Ground truth `trainable` (metric >= threshold)."""
    study["trainable"] = (study[metric] >= threshold).where(study[metric].notnull())
    study["trainable"].attrs.update(long_name=f"trained {metric} >= {threshold}", units="1")
    return study


def cascade_summary(study: xr.Dataset) -> dict[str, float]:
    """Whether each cascade prediction matches the trained ground truth; their agreement and median cost ratio."""
    both = study["trainable"].notnull() & study["predicted_trainable"].notnull()
    study["prediction_agrees"] = (study["predicted_trainable"] == study["trainable"]).where(both)
    return {"agreement": float(study["prediction_agrees"].mean()),  # NaN (absent cells) skipped
            "median_cost_ratio": float(np.nanmedian(study["cost_ratio"].values))}


def study_summary(study: xr.Dataset) -> dict[str, float]:
    """One row of study-level numbers: cell counts (measurements add theirs)."""
    return {
        "cells": int(study["config"].notnull().sum()),
        "diverged": int((study["diverged"] == 1).sum()),
        "trainable": int((study["trainable"] == 1).sum()),
    }
