"""Publication figures from a study store; each plot kind is one function, chosen by the config's `plots`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

sns.set_theme(context="paper", style="whitegrid")


def _reduce(da: xr.DataArray, keep: set[str]) -> xr.DataArray:
    """Average over seeds, take the first value of any other grid axis not kept."""
    for dim in [d for d in da.dims if d not in keep]:
        da = da.mean(dim) if dim == "seed" else da.isel({dim: 0})
    return da


def _panels(da: xr.DataArray, row: str | None, col: str | None) -> Iterator[tuple[plt.Axes, xr.DataArray]]:
    """A figure with one panel per (row, col) value pair; yields (panel, data) for panels that have data."""
    rows = list(da[row].values) if row else [None]
    cols = list(da[col].values) if col else [None]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 2.6 * len(rows)), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for (i, r), (j, c) in itertools.product(enumerate(rows), enumerate(cols)):
        sel = {k: v for k, v in ((row, r), (col, c)) if k}
        sub = da.sel(sel).dropna("layer", how="all")
        ax = axes[i, j]
        ax.set_title(", ".join(f"{k}={v}" for k, v in sel.items()), fontsize=8)
        if sub.sizes["layer"] == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        yield ax, sub
    fig.supxlabel("step")


def metric_vs_axis(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A per-cell scalar (e.g. test accuracy) against one grid axis, one line per `hue`, spread over seeds."""
    keep = {spec["x"], spec.get("hue"), "seed"} - {None}
    frame = _reduce(ds[spec["metric"]], keep).to_dataframe().reset_index().dropna(subset=[spec["metric"]])
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    sns.lineplot(frame, x=spec["x"], y=spec["metric"], hue=spec.get("hue"), marker="o", errorbar="sd", ax=ax)
    if spec.get("logx"):
        ax.set_xscale("log")
    ax.set_ylabel(ds[spec["metric"]].attrs.get("long_name", spec["metric"]))
    return fig


def layer_step_heatmap(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (layer x step) variable as a heatmap per cell, faceted by `row` and `col`."""
    row, col = spec.get("row"), spec.get("col")
    da = _reduce(ds[spec["var"]], {row, col, "layer", "step"})
    norm = Normalize(0, float(da.max()) if np.isfinite(da.max()) else 1)
    for ax, sub in _panels(da, row, col):
        ax.pcolormesh(sub["step"], sub["layer"], sub.transpose("layer", "step"), norm=norm, cmap="viridis",
                      shading="nearest")
    fig = plt.gcf()
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=fig.axes, label=da.attrs.get("long_name", spec["var"]))
    fig.supylabel("layer")
    return fig


def layer_trajectories(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (layer x step) variable as one line per layer over steps, faceted by `row` and `col`."""
    row, col = spec.get("row"), spec.get("col")
    da = _reduce(ds[spec["var"]], {row, col, "layer", "step"})
    cmap = plt.get_cmap("viridis")
    for ax, sub in _panels(da, row, col):
        for k, layer in enumerate(sub["layer"].values):
            ax.plot(sub["step"], sub.sel(layer=layer), color=cmap(k / max(1, sub.sizes["layer"] - 1)), lw=0.8)
    fig = plt.gcf()
    fig.supylabel(da.attrs.get("long_name", spec["var"]), fontsize=8)
    return fig


PLOTS: dict[str, Callable[[xr.Dataset, dict], plt.Figure]] = {
    "metric_vs_axis": metric_vs_axis,
    "layer_step_heatmap": layer_step_heatmap,
    "layer_trajectories": layer_trajectories,
}


def save_plot(ds: xr.Dataset, spec: dict, out: Path) -> None:
    """Draw `spec` (kind, variables, facets; `select` picks grid-axis values first) into `out`."""
    fig = PLOTS[spec["kind"]](ds.sel(spec.get("select", {})), spec)
    fig.savefig(out, dpi=150)
    plt.close(fig)
