"""Grid expansion, cell ids and overrides."""

from __future__ import annotations

import json

import pytest

from layerlab.core.config import CELL_ID_PATTERN, ConfigError, canonical_json, expand_cells


def test_product_grid_with_readable_ids():
    cells = expand_cells({"grid": {"depth": [10, 30], "loss": ["ce", "ce_lbe"]}, "fixed": {"width": 8}})
    assert list(cells) == ["depth~10/loss~ce", "depth~10/loss~ce_lbe", "depth~30/loss~ce", "depth~30/loss~ce_lbe"]
    assert cells["depth~30/loss~ce"] == {"width": 8, "depth": 30, "loss": "ce"}


def test_explicit_cells_override_or_add():  # once each: two entries of one cell are refused (below)
    cells = expand_cells({"grid": {"depth": [10]}, "fixed": {"lr": 0.1},
                          "cells": [{"depth": 10, "lr": 0.5}, {"depth": 99, "width": 4}]})
    assert cells == {"depth~10": {"lr": 0.5, "depth": 10}, "depth~99": {"lr": 0.1, "depth": 99, "width": 4}}


def test_float_values_in_ids_and_pattern():
    import re

    ids = list(expand_cells({"grid": {"sigma_w2": [0.5, 1e-3], "seed": [0]}}))
    assert ids == ["sigma_w2~0.5/seed~0", "sigma_w2~0.001/seed~0"]
    assert all(re.fullmatch(CELL_ID_PATTERN, i) for i in ids)
    assert not re.fullmatch(CELL_ID_PATTERN, "figures")


@pytest.mark.parametrize(("config", "message"), [
    ({"grid": {"depth": [1]}, "cells": [{"loss": "ce"}]}, "missing \\['depth'\\]"),
    ({"grid": {"depth": [1]}, "fixed": {"depth": 2}}, "both in 'grid' and in 'fixed'"),
    ({"grid": {"dataset": ["a/b"]}}, "cannot be part of a cell id"),
    ({"grid": {"depth": [3, 4, 3]}}, "grid.depth: 3 is listed twice"),
    ({"grid": {"lr": [0.01]}, "cells": [{"lr": 0.01, "steps": 5}, {"lr": 0.01, "steps": 9}]},
     r"^cells\[0\] and cells\[1\] are the same cell 'lr~0.01' \(steps 5 vs 9\): give each cell once$"),
    ({"grid": {"lr": [0.01]}, "cells": [{"lr": [0.1, 0.1]}]}, r"^cells\[0\] lists cell 'lr~0.1' twice"),
    ({"grid": {"freeze_weights": ["1" * 240]}}, "bytes long, too long for a folder name \\(at most 250\\)"),
])
def test_bad_configs_name_the_problem(config, message):
    with pytest.raises(ConfigError, match=message):
        expand_cells(config)


def test_canonical_json_is_order_independent():
    assert canonical_json({"b": 1, "a": [1.5, "x"]}) == canonical_json({"a": [1.5, "x"], "b": 1}) == \
        '{"a":[1.5,"x"],"b":1}'
    assert json.loads(canonical_json({"a": 1e-4}))["a"] == 1e-4


def test_explicit_cell_with_lists_is_a_subgrid():
    cells = expand_cells({"grid": {"dataset": ["a"], "lr": [0.1, 1.0]}, "fixed": {"steps": 5},
                          "cells": [{"dataset": "b", "lr": [0.5, 5.0], "steps": 9}, {"dataset": "a", "lr": [1.0]}]})
    assert list(cells) == ["dataset~a/lr~0.1", "dataset~a/lr~1.0", "dataset~b/lr~0.5", "dataset~b/lr~5.0"]
    assert cells["dataset~b/lr~5.0"] == {"steps": 9, "dataset": "b", "lr": 5.0}
    assert cells["dataset~a/lr~1.0"] == {"steps": 5, "dataset": "a", "lr": 1.0}


def test_deepest_sibling_groups_cells_that_differ_in_depth_only():
    from layerlab.catalog.measurements import deepest_sibling
    from layerlab.core.cell import Cell

    cells = expand_cells({"grid": {"sigma_w2": [1.0, 2.0], "depth": [10, 40, 20]}, "fixed": {"width": 8}})
    sources = deepest_sibling({cid: Cell.parse(values) for cid, values in cells.items()})
    assert sources["sigma_w2~1.0/depth~10"] == sources["sigma_w2~1.0/depth~20"] == "sigma_w2~1.0/depth~40"
    assert sources["sigma_w2~2.0/depth~10"] == "sigma_w2~2.0/depth~40"
    assert len(set(sources.values())) == 2
