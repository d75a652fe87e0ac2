"""Claims (layerlab.report.claims): evaluation against hand-computed values on a synthetic store, the checks before any
job, and a tiny study end to end (claims.csv and the report's opening)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import TINY_STUDY, snakemake, write_study
from scipy import stats

from layerlab.core.config import ConfigError
from layerlab.report.claims import STATS, evaluate, to_rst
from layerlab.workflow.validate import check_study

# test_acc[depth, loss, seed]; batch_entropy[depth, loss, seed, step, layer]
ACC = np.array([[[0.9, 0.8, 0.85], [0.95, 0.9, 0.92]],
                [[0.1, 0.12, 0.11], [0.7, 0.8, 0.75]]])


@pytest.fixture
def store() -> xr.Dataset:
    entropy = np.ones((2, 2, 3, 2, 4))
    entropy[1, 0, :, 1, 1:] = 0.0  # depth 30, ce, last step: layers 1-3 collapsed
    entropy[1, 0, 2, 1, 1] = 0.5  # ... but only layers 2-3 in seed 2
    entropy[0, :, :, :, 3] = np.nan  # depth 10 has three layers
    return xr.Dataset(
        {"test_acc": (("depth", "loss", "seed"), ACC.copy()),
         "batch_entropy": (("depth", "loss", "seed", "step", "layer"), entropy)},
        coords={"depth": [10, 30], "loss": ["ce", "ce_lbe"], "seed": [0, 1, 2], "step": [0, 100], "layer": range(4)})


def claim(**spec) -> dict:
    return {"name": "c", "source": "paper 000, Table 1", "paper": "chance", "op": "<=", "value": 0.15,
            "metric": "test_acc", "select": {}, **spec}


def t_interval(x: list[float]) -> tuple[float, float, float]:
    x = np.array(x)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def test_select_mean_and_t_interval_over_seeds(store):
    row = evaluate(store, [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    mean, low, high = t_interval([0.1, 0.12, 0.11])
    assert row.measured == pytest.approx(0.11) and row.measured == pytest.approx(mean)
    assert (row.ci_low, row.ci_high) == pytest.approx((low, high))
    assert (row.ci_low, row.ci_high) == pytest.approx((0.11 - 4.302653 * 0.01 / math.sqrt(3),
                                                       0.11 + 4.302653 * 0.01 / math.sqrt(3)))
    assert row.n_seeds == 3 and bool(row.holds) and row.note == ""
    assert row[["name", "source", "paper", "metric", "op", "value"]].tolist() == [
        "c", "paper 000, Table 1", "chance", "test_acc", "<=", 0.15]


def test_two_selections_are_paired_by_seed(store):
    spec = claim(select={"depth": 30, "loss": "ce_lbe"}, minus={"loss": "ce"}, op=">=", value=0.5)
    row = evaluate(store, [spec]).iloc[0]
    mean, low, high = t_interval([0.6, 0.68, 0.64])
    assert (row.measured, row.ci_low, row.ci_high) == pytest.approx((mean, low, high))
    assert bool(row.holds)
    row = evaluate(store, [{**spec, "value": 0.65}]).iloc[0]
    assert not row.holds and row.note == ""  # a failing claim is a row
    row = evaluate(store, [{**spec, "compare": "ratio", "value": 5.0}]).iloc[0]
    assert row.measured == pytest.approx(np.mean([7.0, 0.8 / 0.12, 0.75 / 0.11])) and row.holds


def test_per_layer_statistic_at_the_last_step(store):
    spec = claim(metric="batch_entropy", select={"depth": 30, "loss": "ce"}, reduce={"step": "last",
                                                                                      "layer": "frac_zero"},
                 op=">=", value=0.5)
    row = evaluate(store, [spec]).iloc[0]
    assert row.measured == pytest.approx(np.mean([0.75, 0.75, 0.5]))
    # depth 10 has NaN for its missing fourth layer: fractions are over the layers it has
    row = evaluate(store, [{**spec, "select": {"depth": 10, "loss": "ce"}}]).iloc[0]
    assert row.measured == 0.0 and not row.holds
    # the deepest layer's value (last finite along `layer`), and where along `layer` the entropy peaks
    spec = claim(metric="batch_entropy", select={"depth": 10, "loss": "ce", "step": 100}, reduce={"layer": "last"},
                 op="between", value=[0.9, 1.1])
    assert evaluate(store, [spec]).iloc[0].measured == 1.0
    spec["select"] = {"depth": 30, "loss": "ce", "step": 100, "seed": 2}
    spec["reduce"] = {"layer": "argmax"}
    row = evaluate(store, [spec]).iloc[0]
    assert row.measured == 0.0 and np.isnan(row.ci_low) and row.n_seeds == 1


def test_an_axis_of_one_value_need_not_be_selected(store):
    one = store.sel(loss=["ce"])
    assert evaluate(one, [claim(select={"depth": 30})]).iloc[0].measured == pytest.approx(0.11)


def test_a_claim_left_with_dims_or_no_data_does_not_hold(store):
    table = evaluate(store, [claim(metric="batch_entropy", select={"depth": 30, "loss": "ce"}, op=">="),
                             claim(select={"depth": 30, "loss": "ce"}, op=">=", value=0.0)])
    assert table.holds.tolist() == [False, True]
    assert "dims ['step', 'layer'] are left" in table.note[0]
    store["test_acc"][:] = np.nan
    row = evaluate(store, [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    assert not row.holds and np.isnan(row.measured) and "no finite value" in row.note


def test_stats_are_the_reduce_enum():
    x = np.array([[np.nan, 0.0, 2.0, np.nan]])
    coord = np.array([5, 6, 7, 8])
    got = {name: float(fn(x, coord)[0]) for name, (fn, _) in STATS.items()}
    assert got == {"first": 0.0, "last": 2.0, "change": 2.0, "mean": 1.0, "median": 1.0, "min": 0.0, "max": 2.0,
                   "sum": 2.0, "frac_zero": 0.5, "frac_positive": 0.5, "argmax": 7.0, "argmin": 6.0}


def test_report_section_counts_claims(store):
    table = evaluate(store, [claim(select={"depth": 30, "loss": "ce"}), claim(name="d", select={"depth": 10,
                                                                                                 "loss": "ce"})])
    text = to_rst(table, "tiny")
    assert text.startswith("Claims: 1 of 2 claims hold\n==========================")
    assert "   * - **no**\n     - d\n" in text and "   * - yes\n     - c\n" in text


# --- checked before any job -----------------------------------------------------------------------------------------

def tiny(*claims: dict) -> dict:
    config = copy.deepcopy(TINY_STUDY)
    config["claims"] = [{"name": f"claim_{i}", "metric": "test_acc", "op": ">=", "value": 0.5, **c}
                        for i, c in enumerate(claims)]
    return config


def message(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        check_study(config)
    return str(err.value)


@pytest.mark.parametrize("spec, expected", [
    ({"select": {"dpth": 3, "loss": "ce"}},
     "claims[0] (claim_0): select: 'dpth' is not a grid axis (depth, loss) (did you mean 'depth'?)"),
    ({"select": {"depth": 30, "loss": "ce"}}, "claims[0] (claim_0): select: depth 30 is not in the grid (values "
                                               "[3, 4, 5])"),
    ({"select": {"depth": 3, "loss": "ce"}, "minus": {"loss": "lbe"}},
     "claims[0] (claim_0): minus: loss 'lbe' is not in the grid (values ['ce', 'ce_lbe'])"),
    ({"select": {"depth": 3, "loss": "ce"}, "metric": "test_accuracy"},
     "claims[0] (claim_0): metric: the study produces no variable 'test_accuracy' (did you mean 'test_acc'?)"),
    ({"select": {"depth": 3, "loss": "ce"}, "metric": "batch_entropy", "reduce": {"step": "lst"}},
     "claims[0] (claim_0): reduce: step: unknown statistic 'lst' (one of first, last, change, mean, median, min, max, "
     "sum, frac_zero, frac_positive, argmax, argmin) (did you mean 'last'?)"),
    ({"select": {"loss": "ce"}}, "claims[0] (claim_0): select: grid axes ['depth'] take several values: fix them in "
                                 "`select` or reduce them in `reduce` (only seeds are left open)"),
    ({"select": {"depth": 3, "loss": "ce"}, "compare": "ratio"},
     "claims[0] (claim_0): compare: needs `minus:`, the second selection"),
    ({"select": {"depth": 3, "loss": "ce"}, "minus": {"loss": "ce_lbe"}, "compare": "ration"},
     "claims[0] (claim_0): compare: 'ration' is not one of ['difference', 'ratio'] (did you mean 'ratio'?)"),
    ({"select": {"depth": 3, "loss": "ce"}, "op": "between"},
     "claims[0] (claim_0): value: 0.5: op 'between' takes [low, high]"),
])
def test_bad_claims_stop_before_any_job(spec, expected):
    assert message(tiny(spec)) == expected


def test_claims_schema_and_duplicate_names():
    assert "claims[0].op: '=' is not one of" in message(tiny({"select": {"depth": 3, "loss": "ce"}, "op": "="}))
    assert "claims[0]: unknown key 'stat'" in message(tiny({"select": {"depth": 3, "loss": "ce"}, "stat": "x"}))
    config = tiny({"select": {"depth": 3, "loss": "ce"}}, {"select": {"depth": 4, "loss": "ce"}})
    config["claims"][1]["name"] = "claim_0"
    assert message(config) == ("claims[0] (claim_0): another claim has the name 'claim_0'\n"
                               "claims[1] (claim_0): another claim has the name 'claim_0'")
    config["claims"][1]["name"] = "claim_1"
    check_study(config)
    assert config["claims"][0]["select"] == {"depth": 3, "loss": "ce"}


# --- end to end -----------------------------------------------------------------------------------------------------

def test_tiny_study_claims_csv_and_report(tmp_path):
    config = copy.deepcopy(TINY_STUDY)
    config["grid"] = {"loss": ["ce", "ce_lbe"], "seed": [0, 1]}
    config.update(cells=[], plots=[])
    config["fixed"] = {**config["fixed"], "depth": 3}
    config["claims"] = [
        {"name": "above_zero", "source": "test", "paper": "better than nothing", "metric": "test_acc",
         "select": {"loss": "ce"}, "op": ">", "value": 0.0},
        {"name": "perfect", "source": "test", "paper": "perfect", "metric": "test_acc",
         "select": {"loss": "ce_lbe"}, "minus": {"loss": "ce"}, "op": ">=", "value": 1.0},
        {"name": "entropy_alive", "metric": "batch_entropy", "select": {"loss": "ce"},
         "reduce": {"step": "last", "layer": "frac_zero"}, "op": "<=", "value": 0.5},
    ]
    write_study(tmp_path, config)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny"
    table = pd.read_csv(out / "claims.csv")
    assert table.name.tolist() == ["above_zero", "perfect", "entropy_alive"]
    assert table.holds.tolist() == [True, False, True]
    acc = pd.read_csv(out / "summary.csv").set_index(["loss", "seed"]).test_acc
    mean, low, high = t_interval(acc.loc["ce"].tolist())
    assert table.loc[0, ["measured", "ci_low", "ci_high"]].tolist() == pytest.approx([mean, low, high], abs=1e-5)
    diff = (acc.loc["ce_lbe"] - acc.loc["ce"]).mean()
    assert table.measured[1] == pytest.approx(diff, rel=1e-4, abs=1e-6)
    assert table.n_seeds.tolist() == [2, 2, 2]
    report = tmp_path / "report.html"
    snakemake(tmp_path, "--report", str(report))
    html = report.read_text()
    assert "Claims: 2 of 3 claims hold" in html
    assert html.index("Claims: 2 of 3 claims hold") < html.index("every cell of the grid")


def test_claims_table_of_several_studies(store, tmp_path, capsys):
    from layerlab.report.claims import main

    for study, depth in (("a", 30), ("b", 10)):
        (tmp_path / study).mkdir()
        evaluate(store, [claim(select={"depth": depth, "loss": "ce"})]).to_csv(tmp_path / study / "claims.csv",
                                                                              index=False)
    main([str(tmp_path / "a"), str(tmp_path / "b" / "claims.csv")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["study", "claim", "paper", "measured", "holds"]
    assert lines[1].split() == ["a", "c", "chance", "0.11", "yes"]
    assert lines[2].split() == ["b", "c", "chance", "0.85", "NO"]
    assert lines[-1] == "1 of 2 claims hold (2 studies)"
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "c")])


def test_bad_claim_stops_snakemake_before_any_job(tmp_path):
    write_study(tmp_path, tiny({"select": {"depth": 3, "loss": "mse"}}))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert ("layerlab config error: claims[0] (claim_0): select: loss 'mse' is not in the grid (values ['ce', "
            "'ce_lbe'])") in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
