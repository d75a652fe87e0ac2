"""Metric stores: xarray Datasets in zarr v3, written atomically, combined into one study store."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import xarray as xr


def _object_strings(ds: xr.Dataset) -> xr.Dataset:
    """numpy `<U` strings have no zarr v3 spec; store them as variable-length (object) strings."""
    fixed = {k: v.astype(object) for k, v in ds.variables.items() if v.dtype.kind == "U"}
    return ds.assign_coords({k: v for k, v in fixed.items() if k in ds.coords}).assign(
        {k: v for k, v in fixed.items() if k not in ds.coords}
    )


def describe(ds: xr.Dataset, descriptions: dict[str, tuple[str, str]]) -> xr.Dataset:
    """Set `long_name` and `units` attrs of the variables named in `descriptions` (name -> (long_name, units))."""
    for name, (long_name, units) in descriptions.items():
        if name in ds:
            ds[name].attrs.update(long_name=long_name, units=units)
    return ds


def write_store(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write `ds` to a zarr v3 store at `path` atomically: a reader sees the old store or the new, whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _object_strings(ds).to_zarr(tmp, mode="w", consolidated=False, zarr_format=3)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def read_store(path: str | os.PathLike) -> xr.Dataset:
    """Open a store eagerly (the files can be replaced afterwards)."""
    with warnings.catch_warnings():  # Snakemake marks directory() outputs with a file zarr does not know
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp", category=UserWarning)
        with xr.open_zarr(path, consolidated=False) as ds:
            return ds.load()


def combine_cells(cells: dict[str, xr.Dataset], params: dict[str, dict], axes: list[str]) -> xr.Dataset:
    """Stack per-cell Datasets along the grid axes (dims named after them; missing combinations are NaN, and so
    are variables a cell does not have, e.g. BatchNorm's gamma in a network without BatchNorm).

    Each cell's canonical config goes along as the string variable `config`.
    """
    parts = []
    for cid, ds in cells.items():
        part = ds.drop_attrs().assign(config=xr.DataArray(ds.attrs["config"], attrs={"long_name": "cell config"}))
        parts.append(part.expand_dims(cell=[cid]).assign_coords({a: ("cell", [params[cid][a]]) for a in axes}))
    # coords="minimal": with the default ("different") the concat fails when the first cell has a dimension
    # coordinate (e.g. BatchNorm's `channel`) that a later cell lacks
    stacked = xr.concat(parts, dim="cell", join="outer", coords="minimal", combine_attrs="drop_conflicts")
    if len(axes) == 1:  # a single axis is a plain index, nothing to unstack
        combined = stacked.swap_dims(cell=axes[0]).drop_vars("cell")
    else:
        combined = stacked.set_index(cell=axes).unstack("cell")
    for ds in reversed(cells.values()):  # unstack drops attrs of new NaN-filled vars; some cells lack some vars
        for name in ds.data_vars:
            combined[name].attrs = ds[name].attrs
    for axis in axes:  # numbers ascending, other values in the order of the cells
        order = list(dict.fromkeys(params[c][axis] for c in cells))
        if all(isinstance(v, int | float) for v in order):
            order = sorted(order)
        combined = combined.reindex({axis: order})
    return _object_strings(combined.transpose(*axes, ...))


def to_table(ds: xr.Dataset, axes: list[str]) -> pd.DataFrame:
    """The scalar (per-cell) variables as a tidy table, one row per existing cell."""
    scalars = [k for k, v in ds.data_vars.items() if set(v.dims) == set(axes) and k != "config"]
    table = ds[scalars].to_dataframe().reset_index()
    present = ds["config"].to_series().dropna().index
    return table.set_index(axes).loc[present].reset_index()
