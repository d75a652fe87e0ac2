"""The config front-end (layerlab.workflow.validate, plotcheck, variables): defaults as snakemake.utils.validate fills
them, short located messages, command-line overrides, batch size vs split size, plot specs."""

from __future__ import annotations

import copy
import time

import pytest
import yaml
from conftest import ROOT, TINY_STUDY

from layerlab.catalog.models import FNNParams
from layerlab.catalog.regimes import BackpropParams
from layerlab.core.cell import cell_schema
from layerlab.core.config import ConfigError, canonical_json, expand_cells
from layerlab.core.messages import nearest
from layerlab.core.registry import DATASETS, PLOT_KEYS, PLOT_ROLES, PLOTS, plot_option, register_plot
from layerlab.workflow.study_file import read_study
from layerlab.workflow.validate import check_study, fuse_settings

CONFIGS = sorted([ROOT / "config/config.yaml", *(ROOT / "config/studies").glob("*.yaml")])


def study(**changes) -> dict:
    config = copy.deepcopy(TINY_STUDY)
    config.update(changes)
    return config


def message(config: dict, cli: dict | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        check_study(config, cli)
    return str(err.value)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_cells_and_defaults_match_snakemake_validate(path, tmp_path):
    """Same config defaults and the same canonical cells (no rerun of existing results) as the old per-cell
    snakemake.utils.validate(set_default=True) with the cell schema (generated from the sections); checked on up to
    8 cells per shipped config (75 ms a cell there)."""
    from snakemake.utils import validate

    cell_schema_file = tmp_path / "cell.schema.yaml"
    cell_schema_file.write_text(yaml.safe_dump(cell_schema()))

    raw = yaml.safe_load(path.read_text())
    old_config = copy.deepcopy(raw)
    validate(old_config, str(ROOT / "src/layerlab/workflow/schemas/config.schema.yaml"))
    old_cells = expand_cells(old_config)
    new_config = copy.deepcopy(raw)
    new_cells = check_study(new_config)
    old_config["plots"] = [PLOTS[p["kind"]].complete(p) for p in old_config["plots"]]  # plot kinds' own defaults
    assert new_config == old_config  # trainability {} -> {metric, threshold}, plots [], probes [], threads 1
    assert list(new_cells) == list(old_cells)
    for cid in list(old_cells)[:8]:
        validate(old_cells[cid], str(cell_schema_file))
        assert new_cells[cid].json == canonical_json(old_cells[cid])


def test_defaults_are_copies_and_nested_defaults_fill():
    a, b = study(), study()
    check_study(a)
    a["trainability"]["threshold"] = 0.9
    check_study(b)
    assert b["trainability"] == {"metric": "train_acc", "threshold": 0.3}
    cells = check_study(study())
    first, second = list(cells.values())[:2]
    first.to_dict()["widths"].append(3)
    assert first[FNNParams].widths == () and second.to_dict()["widths"] == []


def test_checking_10000_cells_takes_well_under_a_second_per_thousand():
    config = study(grid={"depth": [3, 4, 5, 6, 7], "loss": ["ce", "ce_lbe"], "seed": list(range(1000))}, cells=[])
    start = time.perf_counter()
    cells = check_study(config)
    elapsed = time.perf_counter() - start
    assert len(cells) == 10_000 and cells["depth~3/loss~ce/seed~999"].optimizer.momentum == 0.0
    assert elapsed < 5, f"{elapsed:.2f} s for 10,000 cells"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda c: c["fixed"].update(learning_rate=0.1),
     "fixed: unknown key 'learning_rate' ('learning_rate' was unexpected) (did you mean 'lr'?)"),
    (lambda c: c["fixed"].update(lr="fast"), "fixed.lr: 'fast' is not of type 'number'"),
    (lambda c: c["grid"].update(depth=[3, "three"]), "grid.depth[1]: 'three' is not of type 'integer'"),
    (lambda c: c["grid"].update(widht=[3]), "grid: unknown axis 'widht' ('widht' was unexpected: not a cell "
                                            "parameter) (did you mean 'width'?)"),
    (lambda c: c["fixed"].update(dataset="digit"), "fixed.dataset: 'digit' is not one of ['digits', "),
    (lambda c: c.update(steps=20), "top level: unknown key 'steps' ('steps' was unexpected): 'steps' is a cell "
                                   "parameter, it belongs under `fixed:`"),
    (lambda c: c.update(plot=[]), "top level: unknown key 'plot' ('plot' was unexpected) (did you mean 'plots'?)"),
    (lambda c: c["cells"].append({"depth": 6, "loss": "ce", "widht": 3}),
     "cells[1]: unknown key 'widht' ('widht' was unexpected) (did you mean 'width'?)"),
    (lambda c: c["cells"].append({"depth": [6, "six"], "loss": "ce"}), "cells[1].depth[1]: 'six' is not of type"),
    (lambda c: c["cells"].append({"depth": 2, "loss": "ce_lbe"}),
     "cell 'depth~2/loss~ce_lbe' (cells[1]): loss 'ce_lbe' with lbe_layers 'middle' needs depth >= 3"),
    (lambda c: c.update(trainability={"metric": "test_accuracy"}),
     "trainability.metric: 'test_accuracy' is not one of ['train_acc', 'test_acc'] (did you mean 'test_acc'?)"),
])
def test_messages_name_the_place_and_the_nearest_name(change, expected):
    config = study()
    change(config)
    text = message(config)
    assert expected in text
    assert len(text) < 300 and "\n" not in text  # one short line, no schema dump


def test_a_study_name_too_long_for_a_folder_is_one_line():
    text = message(study(study="a" * 300))
    assert text == "study: the name is 300 characters long, at most 250 (it names the folder results/<study>/)"


def test_numbers_as_papers_write_them_are_numbers_and_whole_ones_integers(tmp_path):
    """YAML 1.1 reads `1e-3` as a string; a study file reads it as a number wherever it is written, and a whole
    float for an integer parameter (`steps: 1e2`) as that integer."""
    path = tmp_path / "study.yaml"
    path.write_text("study: tiny\n"
                    "grid: {lr: [1e-3, 3e-4], depth: [3]}\n"
                    "fixed: {dataset: digits, width: 8, steps: 1e2, lbe_beta: 1E-2, lr_milestones: [5e1]}\n"
                    "cells: [{lr: 1e-1, depth: 3, momentum: 9e-1}]\n"
                    "claims: [{name: c, metric: test_acc, select: {lr: 1e-3, depth: 3}, op: '>=', value: 1e-1}]\n")
    config = read_study(path)
    assert config["grid"]["lr"] == [1e-3, 3e-4] and config["claims"][0]["select"]["lr"] == 1e-3
    cells = check_study(config)
    assert list(cells) == ["lr~0.001/depth~3", "lr~0.0003/depth~3", "lr~0.1/depth~3"]
    cell = cells["lr~0.1/depth~3"]
    assert cell.optimizer.momentum == 0.9 and cell.loss.lbe_beta == 0.01
    assert cell.run.steps == 100 and isinstance(cell.run.steps, int) and cell.optimizer.lr_milestones == (50,)
    assert canonical_json(cell.to_dict()["lr_milestones"]) == "[50]"


@pytest.mark.parametrize(("text", "expected"), [
    ("study: x\ngrid: {depth: [3]\n  fixed: 1\n", ", line 3, column 3: not valid YAML: did not find expected ',' "
                                                  "or '}'"),
    ("study: x\n\tgrid: {}\n", ", line 2, column 1: not valid YAML: found a tab character that violates "
                                "indentation"),
    ("- just\n- a list\n", ": a study file is a mapping of keys (study, grid, fixed, ...)"),
])
def test_an_unreadable_study_file_is_one_line_with_its_line(tmp_path, text, expected):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_study(path)
    assert str(err.value) == f"{path}{expected}"
    with pytest.raises(ConfigError, match=f"^study file {tmp_path / 'missing.yaml'} not found$"):
        read_study(tmp_path / "missing.yaml")


def test_nearest_name():
    assert nearest("batch_entropie", ["batch_entropy", "alpha"]) == " (did you mean 'batch_entropy'?)"
    assert nearest("learning_rate", ["lr", "steps"]) == " (did you mean 'lr'?)"
    assert nearest("zzz", ["lr", "steps"]) == ""


# --- command-line overrides ---------------------------------------------------------------------------------------

def test_cli_override_reaches_every_cell_typed():
    config = study(steps=7, lr=2e-3, train_subset="null")  # as Snakemake merges --config into the config
    cells = check_study(config, {"steps": 7, "lr": 2e-3, "train_subset": "null"})
    assert {c.run.steps for c in cells.values()} == {7}
    assert {c.optimizer.lr for c in cells.values()} == {2e-3}  # the explicit cell's own lr 1e12 is overridden too
    assert {c.data.train_subset for c in cells.values()} == {None}
    assert "steps" not in config and config["fixed"]["steps"] == 7
    assert list(cells) == list(expand_cells(TINY_STUDY))  # ids unchanged: overrides are not grid axes


def test_cli_strings_inside_mappings_are_typed_by_the_schema():
    config = study(grid={"depth": [3], "loss": ["ce"]}, cells=[], plots=[])
    config["fixed"].update(steps="7", lr_milestones=["3", "5"], freeze_weights="0111")
    cells = check_study(config, {"fixed": {"steps": "7", "lr_milestones": ["3", "5"], "freeze_weights": "0111"}})
    cell = cells["depth~3/loss~ce"]
    assert cell.run.steps == 7 and cell.optimizer.lr_milestones == (3, 5)
    assert cell[BackpropParams].freeze_weights == "0111"
    config = study(plots=[])
    config["grid"]["depth"] = ["3", "4"]
    assert next(iter(check_study(config, {"grid": {"depth": ["3", "4"]}}))) == "depth~3/loss~ce"


def test_cli_study_settings_are_typed_by_the_schema():
    """`--config fuse=false` arrives as the string 'false': typed, it turns packs off (a string would be refused)."""
    config = study(fuse="false", threads="2")
    check_study(config, {"fuse": "false", "threads": "2"})
    assert config["fuse"] is False and config["threads"] == 2 and fuse_settings(config) is None
    assert "fuse: 'nope' is not of type 'boolean', 'object'" in message(study(fuse="nope"), {"fuse": "nope"})


@pytest.mark.parametrize(("cli", "expected"), [
    ({"depth": 7}, "--config depth: 'depth' is a grid axis (values [3, 4]); change the axis instead, e.g. "
                   "--config 'grid={depth: [7]}'"),
    ({"steps": "seven"}, "--config steps: 'seven' is not of type 'integer'"),
    ({"batch_size": 5000}, "cell 'depth~3/loss~ce': batch_size 5000 is larger than the digits training split"),
])
def test_bad_overrides_are_refused(cli, expected):
    assert expected in message(study(**cli), cli)


# --- batch size vs the training split -------------------------------------------------------------------------------

def test_batch_size_larger_than_the_split_is_refused_naming_the_cell():
    config = study()
    config["fixed"]["batch_size"] = 1438
    assert message(config) == ("cell 'depth~3/loss~ce': batch_size 1438 is larger than the digits training split, "
                               "1437 rows")
    config = study()
    config["fixed"]["batch_size"] = 1437
    assert check_study(config)
    config = study()
    config["cells"].append({"depth": 6, "loss": "ce", "train_subset": 50})
    assert message(config) == ("cell 'depth~6/loss~ce' (cells[1]): batch_size 64 is larger than the digits "
                               "training split, 50 rows (train_subset 50)")


def test_split_sizes_match_the_prepared_dataset(digits_path):
    from layerlab.data.datasets import read_provenance

    shapes = read_provenance(digits_path)["shapes"]
    assert DATASETS["digits"].splits == (shapes["x_train"][0], shapes["x_test"][0])
    assert DATASETS["digits"].shape == tuple(shapes["x_train"][1:])


# --- plot specs --------------------------------------------------------------------------------------------------

def with_plot(**spec) -> dict:
    config = study()
    config["plots"].append({"name": "extra", **spec})
    return config


@pytest.mark.parametrize(("spec", "expected"), [
    ({"kind": "layer_step_heatmap", "var": "batch_entropie", "col": "depth"},
     "plots[3] (extra): var: the study produces no variable 'batch_entropie' (did you mean 'batch_entropy'?)"),
    ({"kind": "metric_vs_axis", "metric": "test_accuracy", "x": "depth"},
     "plots[3] (extra): metric: the study produces no variable 'test_accuracy' (did you mean 'test_acc'?)"),
    ({"kind": "metric_vs_axis", "metric": "test_acc", "x": "width"}, "plots[3] (extra): x: 'width' is not a grid "
                                                                    "axis (axes: depth, loss,"),
    ({"kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "select": {"loss": "mse"}},
     "plots[3] (extra): select: loss 'mse' is not in the grid (values ['ce', 'ce_lbe'])"),
    ({"kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "select": {"lss": "ce"}},
     "plots[3] (extra): select: 'lss' is not a grid axis (depth, loss) (did you mean 'loss'?)"),
    ({"kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "hue": "loss", "select": {"loss": "ce"}},
     "plots[3] (extra): hue: grid axis 'loss' is fixed to one value by `select`"),
    ({"kind": "metric_vs_axis", "metric": "test_acc"}, "plots[3] (extra): `x` is required for kind metric_vs_axis"),
    ({"kind": "layer_step_heatmap", "var": "alpha", "x": "depth"},
     "plots[3] (extra): `x` is not used by kind layer_step_heatmap (it takes var, row, col)"),
    ({"kind": "layer_trajectories", "var": "alpha", "logx": True},
     "plots[3] (extra): `logx` is not used by kind layer_trajectories (it takes var, row, col, logy) (did you mean "
     "'logy'?)"),
    ({"kind": "layer_trajectories", "var": "alpha", "logy": "yes"},
     "plots[3] (extra): logy: 'yes' is not of type 'boolean'"),
    ({"kind": "channel_step_heatmap", "var": "alpha", "center": [1]},
     "plots[3] (extra): center: [1] is not of type 'number'"),
    ({"kind": "reconstructions", "row": "depth", "layers": [0, -1]}, "plots[3] (extra): layers: -1 is less than "
                                                                       "the minimum of 0"),
    ({"kind": "layer_step_heatmap", "var": "grad_rms"}, "the study produces no variable 'grad_rms'"),
    ({"kind": "reconstructions", "row": "depth"}, "plots[3] (extra): the study produces no variable 'reconstruction'"),
    ({"kind": "phase_diagram", "metric": "test_acc"}, "plots[3] (extra): kind phase_diagram needs grid axis "
                                                      "'sigma_w2'"),
    ({"kind": "layer_accuracy"}, "plots[3] (extra): var: the study produces no variable 'layer_test_acc'"),
    ({"kind": "layer_curvs", "var": "alpha"}, "plots[3].kind: 'layer_curvs' is not one of"),
    ({"kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "name": "alpha"},
     "plots[3] (alpha): another plot has the name 'alpha'"),
])
def test_bad_plot_specs_are_caught_before_any_job(spec, expected):
    assert expected in message(with_plot(**spec))


def test_plot_kinds_declare_their_parameters_and_captions():
    """Every built-in kind has a caption and typed parameters whose defaults pass their own schema; the keys every
    plot has are the schema's; a study's plot gets its kind's defaults."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load((ROOT / "src/layerlab/workflow/schemas/config.schema.yaml").read_text())
    assert set(PLOT_KEYS) == set(schema["properties"]["plots"]["items"]["properties"])
    for kind in PLOTS.values():
        assert len(kind.caption) > 80 and "\n" not in kind.caption, kind.name
        for name, param in kind.parameters.items():
            assert param.role in PLOT_ROLES and name not in PLOT_KEYS
            Draft202012Validator.check_schema(param.schema)
            assert Draft202012Validator(param.schema).is_valid(param.default) or param.required, (kind.name, name)
    with pytest.raises(ConfigError, match=r"plot kind 'my_kind' declares parameter\(s\) \['caption'\]: every plot"):
        register_plot("my_kind", "my_plots:draw", parameters={"caption": plot_option("its words", type="string")})
    config = study()
    check_study(config)
    assert config["plots"][2] == {"name": "alpha", "kind": "layer_trajectories", "var": "alpha", "row": None,
                                  "col": "depth", "logy": False, "select": {"loss": "ce_lbe"}, "section": "Figures",
                                  "caption": ""}


def test_study_variables_follow_the_cell_switches():
    from layerlab.workflow.variables import study_variables

    cells = check_study(study())
    base = study_variables(cells, [])
    assert {"loss", "batch_entropy", "alpha", "test_acc", "trainable", "peak_memory_parts"} <= base
    assert not base & {"gamma", "grad_rms", "weight_entropy", "eig_x", "cutoff_depth", "k_redundancy"}
    config = study()
    config["fixed"].update(bn_variant="bn_gamma", grad_rms_probe=True, weight_entropy_bits=4, curvature_every=10)
    switched = study_variables(check_study(config), ["representation"])
    assert {"gamma", "gamma_activity", "grad_rms", "weight_entropy", "huffman_bits", "eig_x", "lsd_train"} <= switched
    assert not switched & {"sent_bits", "cutoff_depth"}  # (beta: declared with gamma by the bn_parameters probe)
    config = study(cells=[], plots=[])
    config["fixed"].update(training="layerwise", lbe_beta=0.1)
    config["grid"]["loss"] = ["ce"]
    layerwise = study_variables(check_study(config), [])
    assert {"layer_test_acc", "stage", "peak_test_acc", "batch_entropy"} <= layerwise  # probes run in every regime
    assert "eig_x" not in layerwise
