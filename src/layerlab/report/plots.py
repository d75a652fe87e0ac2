"""Publication figures from a study store; each plot kind is one function, chosen by the config's `plots` and
declared with its parameters in layerlab.catalog.plots. A kind's function gets the spec with every declared parameter
(defaults filled) and the store with `select` applied (`figure`)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator

from layerlab.core.registry import PLOTS, resolve
from layerlab.report.labels import axis_label

sns.set_theme(context="paper", style="whitegrid")
DPI = 150
LEGEND_LINES = 12  # more lines than this get a colour bar instead of a legend


def _reduce(da: xr.DataArray, keep: set[str | None]) -> xr.DataArray:
    """Average over seeds, take the first value of any other grid axis not kept."""
    for dim in [d for d in da.dims if d not in keep]:
        da = da.mean(dim) if dim == "seed" else da.isel({dim: 0})
    return da


def _seed_sd(da: xr.DataArray, keep: set[str | None]) -> xr.DataArray | None:
    """The spread over seeds (sample sd) of what `_reduce` keeps; None with one seed."""
    if "seed" not in da.dims or da.sizes["seed"] < 2:
        return None
    return _reduce(da.std("seed", ddof=1), keep)  # as seaborn's errorbar="sd"


def _panels(da: xr.DataArray, row: str | None, col: str | None, along: str = "layer",
            sharey: bool = True) -> Iterator[tuple[plt.Axes, xr.DataArray]]:
    """A figure with one panel per (row, col) value pair; yields (panel, data) for panels that have data
    (entries of `along` that are all NaN, e.g. padding, are dropped)."""
    rows = list(da[row].values) if row else [None]
    cols = list(da[col].values) if col else [None]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 2.6 * len(rows)), squeeze=False,
                             sharex=True, sharey=sharey, layout="constrained")
    for (i, r), (j, c) in itertools.product(enumerate(rows), enumerate(cols)):
        sel = {k: v for k, v in ((row, r), (col, c)) if k}
        sub = da.sel(sel).dropna(along, how="all")
        if "step" in sub.dims and along != "step":  # steps some variables skip (e.g. curvature_every > log_every)
            sub = sub.dropna("step", how="all")
        ax = axes[i, j]
        ax.set_title(", ".join(f"{k}={v}" for k, v in sel.items()), fontsize=8)
        if sub.sizes[along] == 0:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        yield ax, sub
    fig.supxlabel("step")


def metric_vs_axis(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A per-cell scalar (e.g. test accuracy) against one grid axis, one line per `hue`, spread over seeds."""
    keep = {spec["x"], spec["hue"], "seed"} - {None}
    frame = _reduce(ds[spec["metric"]], keep).to_dataframe().reset_index().dropna(subset=[spec["metric"]])
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    sns.lineplot(frame, x=spec["x"], y=spec["metric"], hue=spec["hue"], marker="o", errorbar="sd", ax=ax)
    if spec["logx"]:
        ax.set_xscale("log")
    ax.set_ylabel(axis_label(ds[spec["metric"]]))
    return fig


def layer_step_heatmap(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (layer x step) variable as a heatmap per cell, faceted by `row` and `col`: each panel spans its own cell's
    layers (a depth-10 cell beside a depth-50 one is not 80 % padding), all share one colour scale."""
    row, col = spec["row"], spec["col"]
    da = _reduce(ds[spec["var"]], {row, col, "layer", "step"})
    low, high = (float(f(da)) for f in (np.nanmin, np.nanmax)) if da.notnull().any() else (0.0, 1.0)
    norm = Normalize(min(0.0, low), high if high > min(0.0, low) else 1.0)
    for ax, sub in _panels(da, row, col, sharey=False):
        ax.pcolormesh(sub["step"], sub["layer"], sub.transpose("layer", "step"), norm=norm, cmap="viridis",
                      shading="nearest")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig = plt.gcf()
    fig.colorbar(ScalarMappable(norm, "viridis"), ax=fig.axes, label=axis_label(da, spec["var"]))
    fig.supylabel("hidden layer")
    return fig


def layer_trajectories(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (layer x step) variable as one line per layer over steps (also a (step, rep_layer) one, e.g. the
    representation measures during training, `k_redundancy_dynamic`), faceted by `row` and `col`; `logy` for a
    log scale. A layer has one colour in every panel (its index on one scale); each panel has its legend, or, with
    more than LEGEND_LINES layers, the figure has a colour bar of the layer index."""
    row, col = spec["row"], spec["col"]
    dim = "rep_layer" if "rep_layer" in ds[spec["var"]].dims else "layer"
    da = _reduce(ds[spec["var"]], {row, col, dim, "step"})
    norm, cmap = Normalize(0, max(1, da.sizes[dim] - 1)), plt.get_cmap("viridis")
    legends = da.dropna(dim, how="all").sizes[dim] <= LEGEND_LINES
    for ax, sub in _panels(da, row, col, along=dim):
        for index in sub[dim].values:
            line = sub.sel({dim: index}).dropna("step")
            ax.plot(line["step"], line, color=cmap(norm(list(da[dim].values).index(index))), lw=0.8,
                    marker="o" if line.sizes["step"] < 20 else None, ms=2, label=str(index))
        if spec["logy"]:
            ax.set_yscale("log")
        if legends:
            ax.legend(title=dim.replace("_", " "), fontsize=6, title_fontsize=7)
    fig = plt.gcf()
    if not legends:
        bar = fig.colorbar(ScalarMappable(norm, cmap), ax=fig.axes, label=dim.replace("_", " "))
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.supylabel(axis_label(da, spec["var"]), fontsize=8)
    return fig


def channel_step_heatmap(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (step, layer, channel) variable, e.g. BatchNorm's gamma, as one (channel x step) heatmap per panel,
    faceted by `row` and `col` (typically `col: layer`), like paper 002's Fig. 3.2: channels sorted by their final
    value, a diverging colour scale centred at `center` (the neutral value) and shared by all panels. Channels of
    different seeds do not correspond, so only the first seed is drawn."""
    row, col = spec["row"], spec["col"]
    da = ds[spec["var"]]
    da = _reduce(da.isel(seed=0) if "seed" in da.dims else da, {row, col, "step", "channel"})
    center = spec["center"]
    span = float(abs(da - center).max())
    span = span if np.isfinite(span) and span > 0 else 1.0
    norm = Normalize(center - span, center + span)
    for ax, sub in _panels(da, row, col, along="channel", sharey=False):  # layers differ in width
        final = sub.dropna("step", how="all").isel(step=-1)
        ordered = sub.isel(channel=np.argsort(final.values, kind="stable")).transpose("channel", "step")
        ax.pcolormesh(sub["step"], np.arange(sub.sizes["channel"]), ordered, norm=norm, cmap="RdBu_r",
                      shading="nearest")
    fig = plt.gcf()
    fig.colorbar(ScalarMappable(norm, "RdBu_r"), ax=fig.axes, label=axis_label(da, spec["var"]))
    fig.supylabel("channel (sorted by final value)")
    return fig


def phase_diagram(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """Paper 003, Fig. 3: trained `metric` over (sigma_w2, depth), the cascade cutoffs l* (relative entropy) and
    l*_S (differential entropy) of the deepest network per sigma_w2, and the mean-field depth scales xi_c and
    6 xi_c."""
    from layerlab.measurements.theory import critical_sigma_w2, xi_c

    metric = _reduce(ds[spec["metric"]], {"sigma_w2", "depth"}).transpose("depth", "sigma_w2")
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    mesh = ax.pcolormesh(metric["sigma_w2"], metric["depth"], metric, cmap="magma", shading="nearest",
                         vmin=0, vmax=1)
    fig.colorbar(mesh, ax=ax, label=axis_label(ds[spec["metric"]]))
    cutoffs = [("cutoff_depth", "o-", "cascade l*"), ("cutoff_depth_diff_entropy", "s--", "cascade l*_S")]
    for var, style, label in cutoffs:
        if var in ds:
            cutoff = _reduce(ds[var], {"sigma_w2", "depth"}).isel(depth=-1)
            ax.plot(cutoff["sigma_w2"], cutoff, style, color="tab:cyan", ms=4, label=label)
    sigma_b2 = json.loads(str(ds["config"].stack(c=ds["config"].dims).dropna("c")[0].item()))["sigma_b2"]
    grid = np.linspace(float(ds["sigma_w2"].min()), float(ds["sigma_w2"].max()), 200)
    xi = np.array([xi_c(s, sigma_b2) for s in grid])
    ax.plot(grid, xi, "-", color="tab:green", lw=1.2, label=r"$\xi_c$ (mean field)")
    ax.plot(grid, 6 * xi, "--", color="tab:green", lw=1.2, label=r"$6\xi_c$")
    ax.axvline(critical_sigma_w2(sigma_b2), color="grey", lw=0.8, ls=":", label=r"$\chi_1 = 1$")
    ax.set(xlabel=r"$\sigma_w^2$", ylabel="depth", ylim=(0, float(ds["depth"].max()) * 1.05))
    ax.legend(fontsize=6, loc="upper right")
    if "agreement" in ds.attrs:
        ax.set_title(f"agreement l* {ds.attrs['agreement']:.2f}, l*_S {ds.attrs['agreement_diff_entropy']:.2f}, "
                     f"cascade/training time {ds.attrs['median_cost_ratio']:.2f}", fontsize=8)
    return fig


def layer_curves(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A per-layer variable against the layer index, one line per value of `hue` (e.g. sigma_w2)."""
    da = _reduce(ds[spec["var"]], {spec["hue"], "layer"}).dropna("layer", how="all")
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    palette = sns.color_palette("coolwarm", da.sizes[spec["hue"]])
    for color, value in zip(palette, da[spec["hue"]].values, strict=True):
        ax.plot(da["layer"] + 1, da.sel({spec["hue"]: value}), color=color, label=f"{value:g}")
    ax.set(xlabel="layer", ylabel=axis_label(da, spec["var"]))
    ax.legend(title=spec["hue"], fontsize=6, title_fontsize=7, ncols=2)
    return fig


def reconstructions(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """Reconstructed test image (`image`, default 0) from chosen `layers` (columns), one row per `row` value."""
    da = _reduce(ds["reconstruction"].isel(image=spec["image"]), {spec["row"], "layer", "y", "x"})
    layers = spec["layers"] or list(da["layer"].values[:: max(1, da.sizes["layer"] // 6)])
    original = _reduce(ds["original"].isel(image=spec["image"]), {"y", "x"})
    rows = da[spec["row"]].values
    fig, axes = plt.subplots(len(rows), len(layers) + 1, figsize=(1.2 * (len(layers) + 1), 1.25 * len(rows)),
                             squeeze=False, layout="constrained")
    for i, value in enumerate(rows):
        axes[i, 0].imshow(original, cmap="gray")
        axes[i, 0].set_ylabel(f"{spec['row']}={value:g}", fontsize=6)
        for j, layer in enumerate(layers, start=1):
            axes[i, j].imshow(da.sel({spec["row"]: value, "layer": layer}), cmap="gray")
            axes[0, j].set_title(f"layer {layer + 1}", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def spectra(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (step, layer, eigen) spectrum (e.g. paper 004's eig_x): eigenvalues over the largest against the relative
    index i/d, one line per layer (dark: first), at the last measured step unless `select` picks one, faceted by
    `row` and `col`. Numerically zero eigenvalues are drawn at 1e-16."""
    row, col = spec["row"], spec["col"]
    da = _reduce(ds[spec["var"]], {row, col, "layer", "eigen", "step"})
    if "step" in da.dims:
        da = da.dropna("step", how="all").isel(step=-1)
    cmap = plt.get_cmap("viridis")
    for ax, sub in _panels(da, row, col):
        for k, layer in enumerate(sub["layer"].values):
            eig = sub.sel(layer=layer).dropna("eigen").values
            if len(eig) and eig[0] > 0:
                ax.plot(np.arange(1, len(eig) + 1) / len(eig), np.maximum(eig / eig[0], 1e-16),
                        color=cmap(k / max(1, sub.sizes["layer"] - 1)), lw=0.8)
        ax.set_yscale("log")
    fig = plt.gcf()
    fig.supxlabel("relative eigen-index i/d")
    fig.supylabel(rf"$\lambda_i / \lambda_{{\max}}$ of {spec['var']}", fontsize=8)
    return fig


def representation_layers(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (checkpoint, rep_layer) measure of the representation probe (paper 001 ch. 5, e.g. k_redundancy) against
    the representation index (X, hidden layers, logits), one line per `hue` value (default: checkpoint, i.e. init
    vs final; `step` for a measure taken during training, e.g. `k_redundancy_dynamic`), faceted by `row` and `col`;
    seeds averaged; `logy` for a log scale."""
    row, col, hue = spec["row"], spec["col"], spec["hue"]
    da = _reduce(ds[spec["var"]], {row, col, hue, "rep_layer"})
    if hue == "step":  # the measured steps only, early to late in one sequential palette
        da = da.dropna("step", how="all")
    colors = sns.color_palette("viridis" if hue == "step" else "deep", da.sizes[hue])
    palette = dict(zip(da[hue].values, colors, strict=True))
    for ax, sub in _panels(da, row, col, along="rep_layer"):
        for value in sub[hue].values:
            ax.plot(sub["rep_layer"], sub.sel({hue: value}), "o-", ms=3, color=palette[value], label=str(value))
        ax.set_xticks(sub["rep_layer"].values)
        if spec["logy"]:
            ax.set_yscale("log")
        ax.legend(title=hue, fontsize=6, title_fontsize=7)
    fig = plt.gcf()
    fig.supxlabel("representation: 0 = input X, 1..L = hidden layers, L + 1 = logits", fontsize=8)
    fig.supylabel(axis_label(da, spec["var"]), fontsize=8)
    return fig


def layer_profile(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A (step, layer) variable (e.g. paper 001's grad_rms, weight_entropy) against the layer index, one line per
    `hue` value, one panel per chosen step (`steps`; default the first and last step with data), rows by `row`;
    seeds averaged; `logy` for a log scale."""
    row, hue = spec["row"], spec["hue"]
    da = _reduce(ds[spec["var"]], {row, hue, "layer", "step"}).dropna("step", how="all")
    steps = spec["steps"] or sorted({int(da["step"][0]), int(da["step"][-1])})
    da = da.sel(step=steps)
    values = list(da[hue].values) if hue else [None]
    palette = sns.color_palette("deep", len(values))
    for k, (ax, sub) in enumerate(_panels(da, row, "step")):
        for color, value in zip(palette, values, strict=True):
            line = sub.sel({hue: value}) if hue else sub
            ax.plot(sub["layer"], line, "o-", ms=3, color=color, label=str(value))
        ax.set_xticks(sub["layer"].values)
        if spec["logy"]:
            ax.set_yscale("log")
        if hue and k == 0:
            ax.legend(title=hue, fontsize=6, title_fontsize=7)
    fig = plt.gcf()
    fig.supxlabel("layer (last: output layer)")
    fig.supylabel(axis_label(da, spec["var"]), fontsize=8)
    return fig


def fisher_layers(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """Paper 004 Figs. 1/2 (probe `fisher`): a per-layer quantity of the exact Fisher blocks F_k (`var`, solid) and
    of their K-FAC approximations (`kfac`, dashed) against the layer, the full F's (`full`) as a dotted line, one
    colour per `hue` value, panels by `row` (default: Fisher type) and `col` (default: checkpoint); seeds averaged;
    `select` one `p` for condition numbers."""
    row, col, hue = (spec[key] if spec[key] in ds.dims else None for key in ("row", "col", "hue"))  # `select` fixed
    names = {key: spec[key] for key in ("var", "kfac", "full")}
    keep = {row, col, hue, "layer"}
    parts = [_reduce(ds[names[key]], keep) for key in ("var", "kfac", "full")]
    da = xr.concat([parts[0], parts[1], parts[2].broadcast_like(parts[0])], xr.Variable("part", ["F_k", "K-FAC", "F"]),
                   coords="minimal", compat="override")
    values = list(da[hue].values) if hue else [None]
    for k, (ax, sub) in enumerate(_panels(da, row, col)):
        for color, value in zip(sns.color_palette("deep", len(values)), values, strict=True):
            line, tag = (sub.sel({hue: value}), f" {value}") if hue else (sub, "")
            ax.plot(line["layer"], line.sel(part="F_k"), "o-", ms=3, color=color, label=f"F_k{tag}")
            ax.plot(line["layer"], line.sel(part="K-FAC"), "x--", ms=3, color=color, label=f"K-FAC{tag}")
            ax.axhline(float(line.sel(part="F").mean()), ls=":", color=color, label=f"full F{tag}")
        ax.set_xticks(sub["layer"].values)
        if k == 0:
            ax.legend(fontsize=5)
    fig = plt.gcf()
    fig.supxlabel("layer (last: output layer)")
    fig.supylabel(axis_label(ds[names["var"]], names["var"].removesuffix("_block")), fontsize=8)  # legend: which
    return fig


def layer_accuracy(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """Paper 001 Ch. 6: the test accuracy of each layer's decision head (`var`, default layer_test_acc) against the
    layer, one line per `hue` value (default: training), mean and sd over seeds. A hue value without per-layer
    values (backprop) is drawn as a horizontal reference at its final `metric` (default test_acc), band = sd."""
    var, metric, hue = spec["var"], spec["metric"], spec["hue"]
    curves = _reduce(ds[var], {hue, "layer", "seed"})
    finals = _reduce(ds[metric], {hue, "seed"})
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    palette = dict(zip(curves[hue].values, sns.color_palette("deep", curves.sizes[hue]), strict=True))
    for value, color in palette.items():
        curve = curves.sel({hue: value})
        if curve.notnull().any():
            frame = curve.to_dataframe().reset_index().dropna(subset=[var])
            frame["layer"] += 1
            sns.lineplot(frame, x="layer", y=var, color=color, marker="o", errorbar="sd", label=str(value), ax=ax)
        else:
            final = finals.sel({hue: value}).values.ravel()
            final = final[np.isfinite(final)]
            if final.size:
                ax.axhline(final.mean(), color=color, ls="--", lw=1.2, label=f"{value} (final)")
                ax.axhspan(final.mean() - final.std(), final.mean() + final.std(), color=color, alpha=0.15, lw=0)
    heads = var == "layer_test_acc"
    ax.set(xlabel="layer (decision head on its output)" if heads else "layer (1-based; last: output layer)",
           ylabel=axis_label(ds[var]))
    # an AutoLocator (a MaxNLocator) takes `integer`; matplotlib's stub types the base Locator, which takes none
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax.legend(title=hue, fontsize=6, title_fontsize=7)
    return fig


def regime_memory(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """Paper 001 Ch. 6: peak training memory per value of `x` (default: training), or per existing (x, `hue`) pair
    (e.g. training and layer_head), as stacked parts (activations, parameters, gradients, optimizer state, batch;
    MB, mean over seeds), labelled with the ratio to the first bar's total (backprop), beside the final `metric`
    (default test_acc, mean and sd over seeds)."""
    x, hue, metric = spec["x"], spec["hue"], spec["metric"]
    keys = [x, hue] if hue else [x]
    parts = _reduce(ds["peak_memory_parts"], {*keys, "memory_part"}).stack(bar=keys).transpose("bar", "memory_part")
    parts = parts.isel(bar=np.flatnonzero(parts.notnull().any("memory_part").values)) / 1e6
    values = ["\n".join(map(str, bar if isinstance(bar, tuple) else (bar,))) for bar in parts["bar"].values]
    totals = parts.sum("memory_part").values
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5 if len(values) < 4 else 9.5, 3.2), layout="constrained")
    bottom = np.zeros(len(values))
    for part, color in zip(parts["memory_part"].values, sns.color_palette("deep", parts.sizes["memory_part"]),
                           strict=True):
        height = np.nan_to_num(parts.sel(memory_part=part).values)
        left.bar(values, height, bottom=bottom, color=color, label=str(part).replace("_", " "))
        bottom += height
    for i, total in enumerate(totals):
        left.text(i, total, f"{total:.2f} MB\n({total / totals[0]:.0%})", ha="center", va="bottom", fontsize=6)
    left.set(ylabel="peak memory of one step (MB)", ylim=(0, 1.25 * np.nanmax(totals)))
    left.legend(fontsize=6)
    frame = _reduce(ds[metric], {*keys, "seed"}).to_dataframe().reset_index().dropna(subset=[metric])
    frame["bar"] = frame[keys].astype(str).agg("\n".join, axis=1)
    sns.pointplot(frame, x="bar", y=metric, order=values, errorbar="sd", capsize=0.2, linestyle="none", ax=right)
    right.set(xlabel=" / ".join(keys), ylabel=axis_label(ds[metric]))
    return fig


def step_curves(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """A per-step variable (e.g. paper 004's last-layer lambda_max(Sigma_x), or the loss) over training, one line per
    `hue` value (mean over seeds, a band of +- sd with several), faceted by `col`; `logy` for a log scale
    (non-positive values dropped)."""
    hue, col = spec["hue"], spec["col"]
    da = _reduce(ds[spec["var"]], {hue, col, "step"})
    sd = _seed_sd(ds[spec["var"]], {hue, col, "step"})
    palette = dict(zip(da[hue].values, sns.color_palette("colorblind", da.sizes[hue]), strict=True))
    for ax, sub in _panels(da, None, col, along="step"):
        for value in sub[hue].values:
            line = sub.sel({hue: value}).dropna("step")
            line = line.where(line > 0).dropna("step") if spec["logy"] else line
            ax.plot(line["step"], line, color=palette[value], lw=1, label=f"{value}")
            if sd is not None:  # mean +- sd over seeds
                spread = sd.sel({hue: value, **({col: sub[col].item()} if col else {})}).sel(step=line["step"])
                ax.fill_between(line["step"], line - spread, line + spread, color=palette[value], alpha=0.2, lw=0)
        if spec["logy"]:
            ax.set_yscale("log")
        ax.legend(title=hue, fontsize=6, title_fontsize=7)
    fig = plt.gcf()
    fig.supylabel(axis_label(da, spec["var"]), fontsize=8)
    return fig


def figure(ds: xr.Dataset, spec: dict) -> plt.Figure:
    """The figure of one plot spec (kind, variables, facets): its kind's defaults filled, `select`'s grid-axis values
    picked first."""
    kind = PLOTS[spec["kind"]]
    return resolve(kind.draw)(ds.sel(spec.get("select") or {}), kind.complete(spec))


def save_plot(ds: xr.Dataset, spec: dict, out: Path) -> None:
    fig = figure(ds, spec)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
