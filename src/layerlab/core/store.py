"""Metric stores: xarray Datasets in zarr v3, written atomically, combined into one study store."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from layerlab.core.config import STORE_FILE, axis_variable
from layerlab.core.disk import writing


def store_dir(path: str | os.PathLike) -> Path:
    """The store folder of a path that names the store or its root metadata file."""
    path = Path(path)
    return path.parent if path.name == STORE_FILE else path


def _object_strings(ds: xr.Dataset) -> xr.Dataset:
    """numpy `<U` strings have no zarr v3 spec; store them as variable-length (object) strings."""
    fixed = {k: v.astype(object) for k, v in ds.variables.items() if v.dtype.kind == "U"}
    return ds.assign_coords({k: v for k, v in fixed.items() if k in ds.coords}).assign(
        {k: v for k, v in fixed.items() if k not in ds.coords}
    )


def describe(ds: xr.Dataset, descriptions: Mapping[str, tuple[str, str]]) -> xr.Dataset:
    """Set `long_name` and `units` attrs of the variables named in `descriptions` (name -> (long_name, units))."""
    for name, (long_name, units) in descriptions.items():
        if name in ds:
            ds[name].attrs.update(long_name=long_name, units=units)
    return ds


def write_store(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write `ds` to a zarr v3 store at `path` atomically: a reader sees the old store or the new, whole. A failed
    write (layerlab.core.disk.WriteFailed: the path and the free space) leaves no partial copy behind."""
    path = store_dir(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(path):
            _object_strings(ds).to_zarr(tmp, mode="w", consolidated=False, zarr_format=3)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def read_store(path: str | os.PathLike, load: bool = True) -> xr.Dataset:
    """Open a store eagerly (the files can be replaced afterwards) or, with `load=False`, lazily: its arrays are
    read when their values are asked for."""
    ds = xr.open_zarr(store_dir(path), consolidated=False, chunks=None)
    if not load:
        return ds
    with ds:
        return ds.load()


def _union(indexes: list[np.ndarray]) -> np.ndarray:
    """The values of a dimension's coordinates over cells: their common order, else sorted when they sort."""
    if all(np.array_equal(i, indexes[0]) for i in indexes):
        return indexes[0]
    values = list(dict.fromkeys(v for i in indexes for v in i.tolist()))
    try:
        return np.asarray(sorted(values))
    except TypeError:
        return np.asarray(values, dtype=object)


def _axis_order(values: list) -> list:
    """A grid axis's values: numbers ascending, other values in the order of the cells."""
    order = list(dict.fromkeys(values))
    return sorted(order) if all(isinstance(v, int | float) for v in order) else order


def _fill_dtype(dtypes: list[np.dtype]) -> np.dtype:
    """A dtype that holds every cell's values and NaN for the holes (ints and bools go back if there are none)."""
    if any(t.kind in "OUS" for t in dtypes):
        return np.dtype(object)
    if all(t.kind in "fc" for t in dtypes):
        return np.result_type(*dtypes)
    return np.dtype(float)


def _each_loaded(cells: Mapping[str, xr.Dataset]) -> Iterator[tuple[str, xr.Dataset]]:
    """The cells one at a time, each read into memory as a copy (a lazily opened cell stays lazy). One event loop
    for all of them reads a cell's arrays concurrently: 2-3x faster than one variable at a time. Where an event loop
    already runs in this thread (a notebook), a cell is read one variable at a time."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        yield from ((cid, ds.copy(deep=False).load()) for cid, ds in cells.items())
        return
    loop = asyncio.new_event_loop()
    try:
        for cid, ds in cells.items():
            yield cid, loop.run_until_complete(ds.copy(deep=False).load_async())
    finally:
        loop.close()


def combine_cells(cells: Mapping[str, xr.Dataset], params: dict[str, dict], axes: list[str]) -> xr.Dataset:
    """Stack per-cell Datasets along the grid axes (dims named after them; missing combinations are NaN, and so
    are variables a cell does not have, e.g. BatchNorm's gamma in a network without BatchNorm).

    The cells are read one at a time into the study's arrays: pass lazily opened stores (`read_store(path,
    load=False)`) and the memory peak is the study store plus one cell. A variable named like an axis is stored as
    `<name>_value` (axis_variable). Each cell's canonical config goes along as the string variable `config`.
    """
    grid = {a: _axis_order([params[c][a] for c in cells]) for a in axes}
    dims: dict[str, tuple[Hashable, ...]] = {}
    attrs: dict[str, dict] = {}
    dtypes: dict[str, list[np.dtype]] = {}
    coords: dict[Hashable, list[np.ndarray]] = {}
    indexed: set[Hashable] = set()  # dims with a coordinate (others are positions)
    for cid, ds in cells.items():  # pass 1, metadata only: the variables, their dims and the dims' values
        for name, var in ds.data_vars.items():
            if dims.setdefault(str(name), var.dims) != var.dims:
                raise ValueError(f"variable {name} of cell {cid} has dims {var.dims}, other cells {dims[str(name)]}")
            attrs.setdefault(str(name), dict(var.attrs))
            dtypes.setdefault(str(name), []).append(var.dtype)
        for dim, size in ds.sizes.items():
            coords.setdefault(dim, []).append(ds[dim].values if dim in ds.coords else np.arange(size))
        indexed |= set(ds.sizes) & set(ds.coords)
    values = {dim: _union(indexes) for dim, indexes in coords.items()}
    position: dict[Hashable, dict[Any, int]] = {dim: {v: i for i, v in enumerate(np.asarray(vals).tolist())}
                                                for dim, vals in [*grid.items(), *values.items()]}
    shape = [len(grid[a]) for a in axes]
    arrays = {name: np.full(shape + [len(values[d]) for d in dims[name]], np.nan, dtype=_fill_dtype(dtypes[name]))
              for name in dims}
    arrays["config"] = np.full(shape, np.nan, dtype=object)
    filled = dict.fromkeys(arrays, 0)
    for cid, ds in _each_loaded(cells):  # pass 2: each cell's values into its place
        at = tuple(position[a][params[cid][a]] for a in axes)
        arrays["config"][at] = ds.attrs["config"]
        filled["config"] += 1
        for name, var in ds.data_vars.items():
            own = [[position[d][v] for v in (ds[d].values if d in ds.coords else np.arange(ds.sizes[d])).tolist()]
                   for d in var.dims]
            arrays[str(name)][at + np.ix_(*own)] = var.values
            filled[str(name)] += var.size
    variables = {}
    for name, array in arrays.items():
        kinds = {t.kind for t in dtypes.get(name, [])}
        if filled[name] == array.size and kinds and kinds <= set("biu"):  # no hole: back to the cells' int/bool
            array = array.astype(np.result_type(*dtypes[name]))
        var_dims = tuple(axes) + tuple(dims.get(name, ()))
        variables[axis_variable(name, axes)] = xr.Variable(var_dims, array, attrs.get(name, {}))
    variables["config"].attrs = {"long_name": "cell config"}
    dim_coords = {d: v for d, v in values.items() if d in indexed}
    return _object_strings(xr.Dataset(variables, coords={**grid, **dim_coords}))


def stored_cells(ds: xr.Dataset) -> pd.Series:
    """The canonical config (JSON) of each existing cell of a study store, indexed by its grid values: a hole of the
    grid is NaN in memory and an empty string once stored."""
    configs = ds["config"].to_series()
    return configs[configs.notna() & (configs != "")]


def to_table(ds: xr.Dataset, axes: list[str]) -> pd.DataFrame:
    """The scalar (per-cell) variables as a tidy table, one row per existing cell (in stored_cells' order)."""
    scalars = [k for k, v in ds.data_vars.items() if set(v.dims) == set(axes) and k != "config"]
    table = ds[scalars].to_dataframe().reset_index()
    return table.set_index(axes).reindex(stored_cells(ds).index).reset_index()  # by label (a bool axis is no mask)
