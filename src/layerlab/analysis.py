"""Study-level figures of merit derived from the combined store."""

from __future__ import annotations

import numpy as np
import xarray as xr


def add_cascade_prediction(cell: xr.Dataset, depth: int, is_source: bool) -> xr.Dataset:
    """Paper 003's prediction for one cell from the cutoff of its deepest sibling: trainable iff depth <= l*.

    The cost ratio (cascade time / training time of the same network) is defined on the deepest cell only.
    """
    cell["predicted_trainable"] = xr.DataArray(depth <= int(cell["cutoff_depth"]), attrs={
        "long_name": "cascade prediction: depth <= l* of the deepest network with these parameters", "units": "1"})
    ratio = float(cell["cascade_seconds"] / cell["train_seconds"]) if is_source else np.nan
    cell["cost_ratio"] = xr.DataArray(ratio, attrs={"long_name": "cascade time / training time", "units": "1"})
    return cell


def add_trainability(study: xr.Dataset, metric: str, threshold: float) -> xr.Dataset:
    """Ground truth `trainable` (metric >= threshold) and, with a cascade, whether its prediction agrees."""
    present = study[metric].notnull()
    study["trainable"] = (study[metric] >= threshold).where(present)
    study["trainable"].attrs.update(long_name=f"trained {metric} >= {threshold}", units="1")
    if "predicted_trainable" in study:
        both = present & study["predicted_trainable"].notnull()
        study["prediction_agrees"] = (study["predicted_trainable"] == study["trainable"]).where(both)
        study["prediction_agrees"].attrs.update(long_name="cascade prediction matches trained ground truth", units="1")
    return study


def study_summary(study: xr.Dataset) -> dict[str, float]:
    """One row of study-level numbers: cell counts, and the cascade's agreement and median cost ratio."""
    cells = study["config"].notnull()
    row = {
        "cells": int(cells.sum()),
        "diverged": int((study["diverged"] == 1).sum()),
        "trainable": int((study["trainable"] == 1).sum()),
    }
    if "prediction_agrees" in study:
        row["agreement"] = float(study["prediction_agrees"].mean())  # NaN (absent cells) skipped
        row["median_cost_ratio"] = float(np.nanmedian(study["cost_ratio"].values))
    return row
