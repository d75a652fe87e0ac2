"""BatchNorm's learnable parameters per layer (paper 002, Section 3.3): full gamma/beta vectors and their activity.

Layer l is the l-th hidden layer; the output layer is layer `len(model.layers)` (BatchNorm there only with
`bn_last_layer`). Only learnable components are recorded: a frozen gamma (== 1) or beta (== 0) is not a
learnable parameter, and a network with neither has no gamma/beta variables at all.

Activity (Section 3.3.1) is the extent to which a parameter differs from its neutral state, gamma = 1 and
beta = 0; the thesis defines it in words and reads it off plots, so here it is quantified as the mean absolute
deviation over the layer's channels: A_gamma^l = mean_k |gamma_k^l - 1|, A_beta^l = mean_k |beta_k^l|.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.nets.norm import NEUTRAL, AblatedBatchNorm
from layerlab.probes.base import StepState, TrainingProbe


def norm_layers(model: Network) -> dict[int, AblatedBatchNorm]:
    """Layer index -> its BatchNorm, over the hidden layers and the output layer (`head`)."""
    found: dict[int, AblatedBatchNorm] = {}
    for layer, block in enumerate([*model.layers, model.head]):
        norms = [m for m in block.modules() if isinstance(m, AblatedBatchNorm)]
        if len(norms) > 1:
            raise ValueError(f"layer {layer} has {len(norms)} BatchNorm modules; the probe expects at most one")
        found.update({layer: norms[0]} if norms else {})
    return found


@torch.no_grad()
def learnable_parameters(model: Network) -> dict[str, dict[int, np.ndarray]]:
    """{'gamma'|'beta': {layer: values}} for the learnable components only (copies, float32)."""
    values: dict[str, dict[int, np.ndarray]] = {}
    for layer, bn in norm_layers(model).items():
        for name in NEUTRAL:
            if bn.learnable(name):
                values.setdefault(name, {})[layer] = getattr(bn, name).detach().float().cpu().numpy().copy()
    return values


def activity(values: xr.DataArray, name: str) -> xr.DataArray:
    """Mean absolute deviation from the neutral value over `channel` (NaN padding ignored; all-NaN -> NaN)."""
    return abs(values - NEUTRAL[name]).mean("channel")


def trajectories(steps: list[int], records: list[dict[str, dict[int, np.ndarray]]]) -> xr.Dataset:
    """Stack per-step `learnable_parameters` records into `<name>` (step, layer, channel), NaN-padded to the
    widest layer, and `<name>_activity` (step, layer)."""
    out = {}
    for name in NEUTRAL:
        per_step = [r.get(name, {}) for r in records]
        if not any(per_step):
            continue
        layers = sorted(per_step[0])
        width = max(len(v) for v in per_step[0].values())
        data = np.full((len(steps), len(layers), width), np.nan, dtype=np.float32)
        for i, rec in enumerate(per_step):
            for j, layer in enumerate(layers):
                data[i, j, : len(rec[layer])] = rec[layer]
        da = xr.DataArray(data, dims=("step", "layer", "channel"),
                          coords={"step": steps, "layer": layers, "channel": np.arange(width)})
        out[name], out[f"{name}_activity"] = da, activity(da, name)
    return xr.Dataset(out)


class BNParametersProbe(TrainingProbe):
    """`gamma`, `beta` (step, layer, channel) and their activity at the logged steps (learnable ones only)."""


    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.records: list[dict[str, dict[int, np.ndarray]]] = []

    def after_forward(self, state: StepState) -> None:
        if state.logged:
            self.records.append(learnable_parameters(state.model))

    def variables(self, steps: list[int]) -> xr.Dataset:
        return trajectories(steps, self.records)
