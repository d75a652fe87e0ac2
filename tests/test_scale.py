"""The study store at scale: cells read one at a time into the study's arrays (holes NaN, dtypes kept where there
are none), variables named like a grid axis kept as `<name>_value`, stores that open without warnings."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from layerlab.catalog.regimes import RUN_VARIABLES
from layerlab.core.cell import Cell
from layerlab.core.registry import MEASUREMENTS, PROBES, REGIMES
from layerlab.core.store import combine_cells, read_store, write_store
from layerlab.workflow.validate import cell_defaults
from layerlab.workflow.variables import study_variables


def cell(depth: int, seed: int, steps: int) -> xr.Dataset:
    """A synthetic cell: per-step loss, per-layer entropy (depth layers), a bool and an int scalar."""
    step = np.arange(0, steps * 10, 10)
    return xr.Dataset(
        {"loss": ("step", (depth * 100 + seed + step / 1000).astype(np.float32), {"units": "nat"}),
         "entropy": ("layer", np.arange(depth, dtype=float) + seed, {"long_name": "H"}),
         "diverged": ((), depth > 3), "diverged_step": ((), np.int64(depth * 10 + seed))},
        coords={"step": step, "layer": np.arange(depth)}, attrs={"config": f"cfg {depth} {seed}"})


def test_combine_places_each_cell_and_keeps_dtypes(tmp_path):
    params = {f"d{d}s{s}": {"depth": d, "seed": s} for d in (4, 2) for s in (1, 0)}
    for cid, p in params.items():
        write_store(cell(p["depth"], p["seed"], steps=3), tmp_path / f"{cid}.zarr")
    lazy = {cid: read_store(tmp_path / f"{cid}.zarr/zarr.json", load=False) for cid in params}
    study = combine_cells(lazy, params, ["depth", "seed"])
    # the cells were read into copies: the lazily opened stores hold no arrays (memory: the study + one cell)
    assert not any(v.variable._in_memory for ds in lazy.values() for v in ds.data_vars.values())
    assert list(study["depth"].values) == [2, 4] and list(study["seed"].values) == [0, 1]  # numbers ascending
    assert study["entropy"].dims == ("depth", "seed", "layer") and list(study["layer"].values) == [0, 1, 2, 3]
    # a 2-layer cell has NaN for layers 2, 3; every value sits at its (depth, seed, layer)
    np.testing.assert_array_equal(study["entropy"].sel(depth=2, seed=1).values, [1.0, 2.0, np.nan, np.nan])
    np.testing.assert_array_equal(study["entropy"].sel(depth=4, seed=0).values, [0.0, 1.0, 2.0, 3.0])
    assert study["loss"].dtype == np.float32 and float(study["loss"].sel(depth=4, seed=1, step=20)) == np.float32(
        401.02)
    assert study["diverged"].dtype == bool and study["diverged_step"].dtype == np.int64  # no holes: dtypes kept
    assert int(study["diverged_step"].sel(depth=4, seed=1)) == 41
    assert study["entropy"].attrs == {"long_name": "H"} and study["config"].sel(depth=2, seed=0).item() == "cfg 2 0"
    holes = combine_cells({c: lazy[c] for c in ("d4s1", "d2s0")}, params, ["depth", "seed"])
    assert holes["diverged_step"].dtype == float and np.isnan(holes["diverged_step"].sel(depth=2, seed=1))
    assert float(holes["diverged_step"].sel(depth=4, seed=1)) == 41.0
    assert holes["config"].isnull().sum() == 2


def test_combine_inside_a_running_event_loop(tmp_path):
    """Collect's concurrent reads run an event loop of their own; inside a running one (a notebook) the cells are
    read one variable at a time, to the same study store."""
    import asyncio

    params = {f"depth~{d}/seed~{s}": {"depth": d, "seed": s} for d in (2, 4) for s in (0, 1)}
    for cid, p in params.items():
        write_store(cell(p["depth"], p["seed"], steps=3), tmp_path / f"{cid}.zarr")

    def lazy() -> dict[str, xr.Dataset]:
        return {cid: read_store(tmp_path / f"{cid}.zarr/zarr.json", load=False) for cid in params}

    async def inside() -> xr.Dataset:
        return combine_cells(lazy(), params, ["depth", "seed"])

    xr.testing.assert_identical(asyncio.run(inside()), combine_cells(lazy(), params, ["depth", "seed"]))


def test_dims_without_coordinates_are_positions():
    """e.g. a reconstruction's (y, x): cells of different sizes are padded with NaN, no coordinate is invented."""
    cells = {f"c{n}": xr.Dataset({"image": (("y", "x"), np.full((n, n), float(n)))}, attrs={"config": str(n)})
             for n in (2, 3)}
    study = combine_cells(cells, {"c2": {"size": 2}, "c3": {"size": 3}}, ["size"])
    assert study["image"].dims == ("size", "y", "x") and "y" not in study.coords
    np.testing.assert_array_equal(study["image"].sel(size=2).values,
                                  [[2.0, 2.0, np.nan], [2.0, 2.0, np.nan], [np.nan] * 3])
    assert (study["image"].sel(size=3) == 3.0).all()


def test_mismatched_dims_name_the_cell():
    params = {"a": {"depth": 1}, "b": {"depth": 2}}
    odd = cell(2, 0, 3).assign(entropy=("step", np.zeros(3)))
    with pytest.raises(ValueError, match="variable entropy of cell b has dims"):
        combine_cells({"a": cell(1, 0, 3), "b": odd}, params, ["depth"])


def declared_variables() -> set[str]:
    names = set(RUN_VARIABLES)
    for table in (MEASUREMENTS, PROBES, REGIMES):
        for spec in table.values():
            names |= set(spec.variables)
    return names


@pytest.mark.parametrize("axis", sorted(declared_variables() & set(cell_defaults())))
def test_a_variable_named_like_an_axis_is_kept(axis):
    """Every cell parameter a grid can sweep that is also a variable's name (e.g. `loss`): the axis keeps its values
    and the variable is stored, declared and described as `<name>_value`."""
    values = ["a", "b"]
    cells = {v: xr.Dataset({axis: ("step", np.array([1.0, 2.0]) + i, {"units": "u"})}, coords={"step": [0, 5]},
                           attrs={"config": v}) for i, v in enumerate(values)}
    study = combine_cells(cells, {v: {axis: v} for v in values}, [axis])
    assert list(study[axis].values) == values and study[axis].attrs == {}
    np.testing.assert_array_equal(study[f"{axis}_value"].sel({axis: "b"}).values, [2.0, 3.0])
    assert study[f"{axis}_value"].attrs == {"units": "u"}
    declared = study_variables({v: Cell.parse({axis: v}) for v in values}, [], [axis])
    assert f"{axis}_value" in declared and axis not in declared


def test_many_seeds_are_drawn_as_mean_and_spread(tmp_path):
    """200 seeds: one line per hue value (their mean) with a band of +- sd, never a line per seed."""
    from matplotlib.collections import PolyCollection

    from layerlab.report.plots import figure

    rng = np.random.default_rng(0)
    loss = rng.normal(size=(2, 200, 5)) + np.arange(5)
    ds = xr.Dataset({"loss_value": (("depth", "seed", "step"), loss), "test_acc": (("depth", "seed"), loss[..., 0])},
                    coords={"depth": [3, 6], "seed": np.arange(200), "step": np.arange(0, 50, 10)})
    fig = figure(ds, {"kind": "step_curves", "var": "loss_value", "hue": "depth"})
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[1].get_ydata(), loss[1].mean(0))
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    top = bands[1].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx((loss[1].mean(0) + loss[1].std(0, ddof=1)).max())
    fig = figure(ds, {"kind": "metric_vs_axis", "metric": "test_acc", "x": "depth"})
    assert len(fig.axes[0].lines) == 1
