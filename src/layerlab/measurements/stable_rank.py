"""Stable rank of every layer's weight, paper 001 (Øland's thesis) Fig. 6.3 ("Rank & Random Robin").

The thesis plots it per layer for bottom-up DLL, random-robin DLL and backprop without defining it; the seed notes'
[rec]: srank(W) = ||W||_F^2 / ||W||_2^2 = sum_k s_k^2 / s_1^2 over the singular values s_k of W, with conv kernels
reshaped to (C_out, C_in k k); 1 <= srank(W) <= rank(W). Computed in float64 for the Linear/Conv map of every hidden
layer and of the output layer (`layer` = len(layers)), on the init and the final network (`checkpoint`).

Study level (`stable_rank_summary`, where `training` is a grid axis with backprop): `stable_rank_gap`, each cell's
mean over layers of |log srank - log srank of the backprop cell with the same other axes| (Fig. 6.3's "closer to
the baseline").
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network, measured_layers

BASELINE = "backprop"


def stable_rank(weight: torch.Tensor) -> float:
    """||W||_F^2 / ||W||_2^2 of a Linear weight or a conv kernel (as a (C_out, C_in k k) matrix), in float64."""
    s = torch.linalg.svdvals(weight.detach().flatten(1).to("cpu", torch.float64))
    return float((s**2).sum() / s[0] ** 2)


def run_stable_rank(cell: Cell, data: Dataset, models: dict[str, Network], device: torch.device) -> xr.Dataset:
    """`stable_rank` (checkpoint, layer) of every network in `models` (name -> network)."""
    ranks = {name: [stable_rank(m.weight) for m in measured_layers(net)] for name, net in models.items()}
    values = np.array(list(ranks.values()), dtype=np.float64)
    return xr.Dataset({"stable_rank": (("checkpoint", "layer"), values)},
                      coords={"checkpoint": np.array(list(ranks), dtype=object), "layer": np.arange(values.shape[1])})


def stable_rank_summary(study: xr.Dataset) -> dict[str, float]:
    """Adds `stable_rank_gap` (training axis with backprop only); returns its mean over the other axes per training
    regime, final networks."""
    if "training" not in study.dims or BASELINE not in study["training"].values:
        return {}
    log = xr.apply_ufunc(np.log, study["stable_rank"])
    study["stable_rank_gap"] = abs(log - log.sel(training=BASELINE, drop=True)).mean("layer")
    final = study["stable_rank_gap"].sel(checkpoint="final") if "checkpoint" in study.dims else study["stable_rank_gap"]
    return {f"stable_rank_gap_{t}": float(final.sel(training=t).mean()) for t in study["training"].values
            if t != BASELINE}
