"""Claims (layerlab.report.claims): evaluation and verdicts against hand-computed values and intervals on a synthetic
store, the checks before any job, the command's table, and a tiny study end to end (claims.csv, the report's
opening, the one-page reproduction report in a real browser)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import TINY_STUDY, snakemake, write_study
from scipy import stats

from layerlab.core.config import ConfigError
from layerlab.report.claims import STATS, evaluate, main, summary_line, to_rst
from layerlab.report.claims_page import paper_of
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


# hand-computed: t_{0.975, 2} = 4.302653, t_{0.975, 1} = 12.706205
CE_30 = (0.11, 0.0851586, 0.1348414)  # depth 30, ce: seeds 0.1, 0.12, 0.11 (mean, 95% interval)
GAIN_30 = (0.64, 0.5406345, 0.7393655)  # depth 30, ce_lbe - ce: 0.6, 0.68, 0.64
RATIO_30 = (6.8282828, 6.4136900, 7.2428757)  # depth 30, ce_lbe / ce: 7, 0.8/0.12, 0.75/0.11
CE_30_TWO_SEEDS = (0.11, -0.01706205, 0.23706205)  # seeds 0, 1 only: 0.1, 0.12


def test_select_mean_and_t_interval_over_seeds(store):
    row = evaluate(store, [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    assert (row.measured, row.ci_low, row.ci_high) == pytest.approx(CE_30)
    assert (row.ci_low, row.ci_high) == pytest.approx(t_interval([0.1, 0.12, 0.11])[1:])
    assert row.n_seeds == 3 and row.per_seed == "0.1;0.12;0.11" and row.verdict == "holds" and row.note == ""
    assert row[["name", "source", "paper", "metric", "scale", "op", "value"]].tolist() == [
        "c", "paper 000, Table 1", "chance", "test_acc", "quick", "<=", 0.15]


@pytest.mark.parametrize("op, value, verdict", [
    # interval 0.08516 .. 0.13484
    ("<=", 0.15, "holds"), ("<=", 0.11, "inconclusive"), ("<=", 0.08, "fails"),
    ("<", 0.1349, "holds"), ("<", 0.12, "inconclusive"), ("<", 0.0851, "fails"),
    (">=", 0.085, "holds"), (">=", 0.1, "inconclusive"), (">=", 0.135, "fails"),
    (">", 0.085, "holds"), (">", 0.11, "inconclusive"), (">", 0.1349, "fails"),
    ("between", [0.08, 0.14], "holds"), ("between", [0.0, 0.1], "inconclusive"),
    ("between", [0.09, 0.13], "inconclusive"), ("between", [0.14, 0.2], "fails"), ("between", [0.0, 0.08], "fails"),
])
def test_verdict_asks_the_whole_interval(store, op, value, verdict):
    row = evaluate(store, [claim(select={"depth": 30, "loss": "ce"}, op=op, value=value)]).iloc[0]
    assert (row.measured, row.ci_low, row.ci_high) == pytest.approx(CE_30)
    assert row.verdict == verdict and row.note == ""


@pytest.mark.parametrize("compare, expected, op, value, verdict", [
    ("difference", GAIN_30, ">=", 0.5, "holds"), ("difference", GAIN_30, ">=", 0.65, "inconclusive"),
    ("difference", GAIN_30, ">=", 0.75, "fails"), ("difference", GAIN_30, "between", [0.5, 0.8], "holds"),
    ("ratio", RATIO_30, ">", 5.0, "holds"), ("ratio", RATIO_30, "between", [6.5, 7.0], "inconclusive"),
    ("ratio", RATIO_30, "<", 6.0, "fails"), ("ratio", RATIO_30, "<=", 7.3, "holds"),
])
def test_two_selections_are_paired_by_seed(store, compare, expected, op, value, verdict):
    spec = claim(select={"depth": 30, "loss": "ce_lbe"}, minus={"loss": "ce"}, compare=compare, op=op, value=value)
    row = evaluate(store, [spec]).iloc[0]
    assert (row.measured, row.ci_low, row.ci_high) == pytest.approx(expected)
    assert row.verdict == verdict and row.n_seeds == 3


def test_two_seeds_wide_interval_is_inconclusive(store):
    # the point estimate 0.11 satisfies <= 0.15, the interval -0.017 .. 0.237 does not decide
    row = evaluate(store.sel(seed=[0, 1]), [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    assert (row.measured, row.ci_low, row.ci_high) == pytest.approx(CE_30_TWO_SEEDS)
    assert row.verdict == "inconclusive" and row.n_seeds == 2


def test_one_seed_is_unreplicated_whichever_side_it_is_on(store):
    one = store.sel(seed=[1])
    rows = evaluate(one, [claim(select={"depth": 30, "loss": "ce"}), claim(select={"depth": 10, "loss": "ce"})])
    assert rows.verdict.tolist() == ["unreplicated", "unreplicated"]
    assert rows.measured.tolist() == [0.12, 0.8] and rows.n_seeds.tolist() == [1, 1]
    assert rows.ci_low.isna().all() and rows.ci_high.isna().all()
    assert rows.note.tolist() == ["one seed: its value satisfies the claim", "one seed: its value violates the claim"]
    # a store without a seed axis (seed fixed in the config) is one seed too
    row = evaluate(store.sel(seed=2, drop=True), [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    assert row.verdict == "unreplicated" and row.measured == 0.11


def test_seeds_without_a_value_are_left_out_and_said(store):
    store["test_acc"][1, 0, 2] = np.nan  # depth 30, ce, seed 2 diverged
    row = evaluate(store, [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    assert (row.measured, row.ci_low, row.ci_high) == pytest.approx(CE_30_TWO_SEEDS)
    assert row.n_seeds == 2 and row.per_seed == "0.1;0.12;nan"
    assert row.verdict == "inconclusive" and row.note == "1 of 3 seeds without a finite value"


def test_paper_scale_claim_in_a_quick_study(store):
    spec = claim(select={"depth": 30, "loss": "ce"}, scale="paper")
    row = evaluate(store, [spec]).iloc[0]
    assert row.verdict == "not at this scale" and row.scale == "paper"
    assert row.measured == pytest.approx(0.11) and row.note == "marked scale: paper, and this is a quick study"
    assert evaluate(store, [spec], scale="paper").iloc[0].verdict == "holds"


def test_summary_line_counts_each_verdict(store):
    table = evaluate(store, [
        claim(name="a", select={"depth": 30, "loss": "ce"}),
        claim(name="b", select={"depth": 10, "loss": "ce"}),
        claim(name="c", select={"depth": 10, "loss": "ce"}, op=">=", value=0.82),
        claim(name="d", select={"depth": 10, "loss": "ce", "seed": 0}),
        claim(name="e", metric="batch_entropy", select={"depth": 30, "loss": "ce"}),
    ])
    assert table.verdict.tolist() == ["holds", "fails", "inconclusive", "unreplicated", "not measurable"]
    assert summary_line(table.verdict) == "1 hold, 1 fail, 1 inconclusive, 1 unreplicated, 1 not measurable of 5"
    assert summary_line(table.verdict[:1]) == "1 hold, 0 fail, 0 inconclusive, 0 unreplicated of 1"
    assert summary_line([*table.verdict, "not at this scale"]).endswith(
        "1 not measurable, 1 not at this scale of 6")


def test_per_layer_statistic_at_the_last_step(store):
    spec = claim(metric="batch_entropy", select={"depth": 30, "loss": "ce"}, reduce={"step": "last",
                                                                                      "layer": "frac_zero"},
                 op=">=", value=0.5)
    row = evaluate(store, [spec]).iloc[0]
    assert row.measured == pytest.approx(np.mean([0.75, 0.75, 0.5]))
    # depth 10 has NaN for its missing fourth layer: fractions are over the layers it has
    row = evaluate(store, [{**spec, "select": {"depth": 10, "loss": "ce"}}]).iloc[0]
    assert row.measured == 0.0 and row.verdict == "fails"
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


def test_a_claim_left_with_dims_or_no_data_is_not_measurable(store):
    table = evaluate(store, [claim(metric="batch_entropy", select={"depth": 30, "loss": "ce"}, op=">="),
                             claim(select={"depth": 30, "loss": "ce"}, op=">=", value=0.0)])
    assert table.verdict.tolist() == ["not measurable", "holds"]
    assert table.note[0] == ("dims ['step', 'layer'] are left: reduce them (`reduce: {step: last}`) or select a "
                             "value")
    assert table.per_seed[0] == "" and table.n_seeds[0] == 0
    row = evaluate(store, [claim(metric="cascade_epoch_cost")]).iloc[0]
    assert row.verdict == "not measurable" and row.note == (
        "the study store has no 'cascade_epoch_cost': collected by an older layerlab? snakemake --forcerun collect")
    store["test_acc"][:] = np.nan
    row = evaluate(store, [claim(select={"depth": 30, "loss": "ce"})]).iloc[0]
    assert row.verdict == "not measurable" and np.isnan(row.measured)
    assert row.note == "no finite value (missing or diverged cells)"


def test_stats_are_the_reduce_enum():
    x = np.array([[np.nan, 0.0, 2.0, np.nan]])
    coord = np.array([5, 6, 7, 8])
    got = {name: float(fn(x, coord)[0]) for name, (fn, _) in STATS.items()}
    assert got == {"first": 0.0, "last": 2.0, "change": 2.0, "mean": 1.0, "median": 1.0, "min": 0.0, "max": 2.0,
                   "sum": 2.0, "frac_zero": 0.5, "frac_positive": 0.5, "argmax": 7.0, "argmin": 6.0}


def test_report_section_counts_verdicts_and_marks_failures(store):
    table = evaluate(store, [claim(select={"depth": 30, "loss": "ce"}), claim(name="d", select={"depth": 10,
                                                                                                 "loss": "ce"}),
                             claim(name="e", select={"depth": 10, "loss": "ce", "seed": 0})])
    text = to_rst(table, "tiny")
    head = "Claims: 1 hold, 1 fail, 0 inconclusive, 1 unreplicated of 3"
    assert text.startswith(f"{head}\n{'=' * len(head)}\n")
    assert ("   * - verdict\n     - name\n     - source\n     - paper\n     - metric\n     - claim\n"
            "     - measured\n     - 95% interval\n     - seeds\n     - note\n") in text
    assert ".. role:: verdict-fails\n" in text and ".. role:: verdict-not-at-this-scale\n" in text
    assert ("   * - :verdict-holds:`✓ holds`\n     - c\n     - paper 000, Table 1\n     - chance\n     - test_acc\n"
            "     - <= 0.15\n     - 0.11\n     - 0.08516 .. 0.1348\n     - 3\n     -  \n") in text
    assert "   * - :verdict-fails:`✗ FAILS`\n     - **d**\n" in text
    assert ("   * - :verdict-unreplicated:`unreplicated`\n     - e\n     - paper 000, Table 1\n     - chance\n"
            "     - test_acc\n     - <= 0.15\n     - 0.9\n     - none: one seed\n     - 1\n"
            "     - one seed: its value violates the claim\n") in text


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

def test_tiny_study_claims_csv_report_and_page(tmp_path, browser):
    config = copy.deepcopy(TINY_STUDY)
    config["grid"] = {"loss": ["ce", "ce_lbe"], "seed": [0, 1]}
    config.update(cells=[], plots=[])
    config["fixed"] = {**config["fixed"], "depth": 3}
    config["claims"] = [
        {"name": "above_zero", "source": "paper 000, test", "paper": "better than nothing", "metric": "test_acc",
         "select": {"loss": "ce"}, "op": ">", "value": 0.0},
        {"name": "perfect", "source": "paper 000, test", "paper": "perfect", "metric": "test_acc",
         "select": {"loss": "ce_lbe"}, "minus": {"loss": "ce"}, "op": ">=", "value": 1.0},
        {"name": "entropy_alive", "metric": "batch_entropy", "select": {"loss": "ce"},
         "reduce": {"step": "last", "layer": "frac_zero"}, "op": "<=", "value": 0.5},
        {"name": "one_seed", "source": "paper 003, test", "metric": "test_acc", "select": {"loss": "ce", "seed": 0},
         "op": ">=", "value": 0.0},
        {"name": "paper_only", "source": "paper 003, test", "metric": "train_seconds", "select": {"loss": "ce"},
         "op": "<", "value": 1.0, "scale": "paper"},
    ]
    write_study(tmp_path, config)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny"
    table = pd.read_csv(out / "claims.csv", keep_default_na=False, na_values=[""])
    assert table.name.tolist() == ["above_zero", "perfect", "entropy_alive", "one_seed", "paper_only"]
    assert table.n_seeds.tolist() == [2, 2, 2, 1, 2]
    acc = pd.read_csv(out / "summary.csv").set_index(["loss", "seed"]).test_acc
    mean, low, high = t_interval(acc.loc["ce"].tolist())
    assert table.loc[0, ["measured", "ci_low", "ci_high"]].tolist() == pytest.approx([mean, low, high], abs=1e-5)
    assert table.per_seed[0] == ";".join(f"{v:.6g}" for v in acc.loc["ce"])
    assert table.verdict[0] == ("holds" if low > 0 else "inconclusive")
    gain = (acc.loc["ce_lbe"] - acc.loc["ce"]).tolist()
    mean, low, high = t_interval(gain)
    assert table.measured[1] == pytest.approx(mean, rel=1e-4, abs=1e-6)
    assert table.verdict[1] == ("fails" if high < 1.0 else "inconclusive")
    assert table.verdict[3] == "unreplicated" and table.measured[3] == pytest.approx(acc.loc[("ce", 0)], abs=1e-6)
    assert table.verdict[4] == "not at this scale" and table.measured[4] > 0
    verdicts = table.verdict.tolist()

    report = out / "report.html"
    snakemake(tmp_path, "--report", str(report))
    html = report.read_text()
    head = f"Claims: {summary_line(table.verdict)}"
    assert head in html and html.index(head) < html.index("every cell of the grid")
    assert '<span class=\\"verdict-fails\\">\\u2717 FAILS</span>' in html  # a failing row's mark, styled by class

    page_file = tmp_path / "results/claims.html"
    main([str(out), "--html", str(page_file)])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(page_file.as_uri())
    seen = read_page(page)
    page.screenshot(path=str(tmp_path / "claims.png"), full_page=True)
    page.close()
    assert list(seen) == [f"Paper 000: {summary_line(verdicts[:2])} (tiny)",
                          f"Paper 003: {summary_line(verdicts[3:])} (tiny)",
                          f"Other: {summary_line(verdicts[2:3])} (tiny)"]
    rows = [r for section in seen.values() for r in section["rows"]]
    assert [r["cells"][1].split("\n")[0] for r in rows] == ["above_zero", "perfect", "one_seed", "paper_only",
                                                            "entropy_alive"]
    assert [r["cells"][8] for r in rows] == [verdicts[i] for i in (0, 1, 3, 4, 2)]
    assert [r["dots"] for r in rows] == [2, 2, 1, 2, 2]
    assert {r["href"] for r in rows} == {"tiny/report.html"}
    assert (tmp_path / "claims.png").stat().st_size > 10_000


def write_claims(store: xr.Dataset, folder: Path, *claims: dict) -> None:
    folder.mkdir(parents=True)
    evaluate(store, list(claims)).to_csv(folder / "claims.csv", index=False, float_format="%.6g")


def test_claims_table_of_several_studies(store, tmp_path, capsys):
    write_claims(store, tmp_path / "a", claim(select={"depth": 30, "loss": "ce"}),
                 claim(name="gain", select={"depth": 30, "loss": "ce_lbe"}, minus={"loss": "ce"}, op="between",
                       value=[0.5, 0.8]))
    write_claims(store, tmp_path / "b", claim(select={"depth": 10, "loss": "ce"}))
    main([str(tmp_path / "a"), str(tmp_path / "b" / "claims.csv")])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[:4]] == [
        ["study", "claim", "threshold", "measured", "95%", "interval", "seeds", "verdict"],
        ["a", "c", "<=", "0.15", "0.11", "0.08516", "..", "0.1348", "3", "holds"],
        ["a", "gain", "in", "[0.5,", "0.8]", "0.64", "0.5406", "..", "0.7394", "3", "holds"],
        ["b", "c", "<=", "0.15", "0.85", "0.7258", "..", "0.9742", "3", "fails"]]
    assert lines[-1] == "2 hold, 1 fail, 0 inconclusive, 0 unreplicated of 3 claims (2 studies)"
    with pytest.raises(SystemExit, match="no such file"):
        main([str(tmp_path / "c")])
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "claims.csv").write_text("name,measured,holds\nc,0.1,True\n")
    with pytest.raises(SystemExit, match="written before claims had verdicts: rerun"):
        main([str(tmp_path / "old")])


# --- the reproduction report (layerlab.report.claims_page) in a real browser ---------------------------------------

HEADER = ["study", "claim", "the paper says", "threshold", "measured", "95% interval", "seeds", "per-seed values",
          "verdict", "note"]


def read_page(page) -> dict:
    """What a reader sees: each section's heading and its rows' cell texts, verdicts and strip-plot dots."""
    sections = {}
    for section in page.locator("section").all():
        rows = []
        for tr in section.locator("tbody tr").all():
            rows.append({"cells": [td.inner_text().strip() for td in tr.locator("td").all()],
                         "class": tr.get_attribute("class"), "dots": tr.locator("circle.seed").count(),
                         "href": tr.locator("td.study a").get_attribute("href"),
                         "background": tr.evaluate("e => getComputedStyle(e).backgroundColor")})
        sections[section.locator("h2").inner_text()] = {
            "header": [th.inner_text() for th in section.locator("thead th").all()], "rows": rows}
    return sections


@pytest.fixture
def studies(store, tmp_path) -> Path:
    """results/ with two studies: a (paper 000, a report built) and b (paper 000 and 003, no report)."""
    results = tmp_path / "results"
    write_claims(store, results / "a", claim(select={"depth": 30, "loss": "ce"}),
                 claim(name="gain", select={"depth": 30, "loss": "ce_lbe"}, minus={"loss": "ce"}, op="between",
                       value=[0.5, 0.8], paper="LBE: +81 points"))
    (results / "a" / "report.html").write_text("<html>report a</html>")
    store["test_acc"][0, 0, 2] = float("nan")  # a seed without a value
    write_claims(store, results / "b",
                 claim(name="deep", select={"depth": 10, "loss": "ce"}),
                 claim(name="one_seed", select={"depth": 30, "loss": "ce", "seed": 1}),
                 claim(name="costly", source="paper 003, Sec. 2.2", paper="about 3 epochs",
                       select={"depth": 30, "loss": "ce"}, op=">=", value=0.1, scale="paper"))
    return results


def test_paper_of_a_source():
    assert [paper_of(s) for s in ("paper 003, Sec. 2.2, Table 1", "Paper 001 (thesis)", "test", "")] == [
        "paper 003", "paper 001", "other", "other"]


def test_reproduction_report_in_a_browser(studies, tmp_path, browser, capsys):
    out = studies / "claims.html"
    main([str(studies / "a"), str(studies / "b"), "--html", str(out)])
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(out.as_uri())
    assert page.locator("p.summary").inner_text() == (
        "2 hold, 1 fail, 0 inconclusive, 1 unreplicated, 1 not at this scale of 5 claims, 2 studies.")
    seen = read_page(page)
    assert list(seen) == ["Paper 000: 2 hold, 1 fail, 0 inconclusive, 1 unreplicated of 4 (a, b)",
                          "Paper 003: 0 hold, 0 fail, 0 inconclusive, 0 unreplicated, 1 not at this scale of 1 (b)"]
    paper_000 = seen["Paper 000: 2 hold, 1 fail, 0 inconclusive, 1 unreplicated of 4 (a, b)"]
    assert paper_000["header"] == HEADER
    rows = paper_000["rows"]
    assert [r["cells"][:7] + r["cells"][8:] for r in rows] == [
        ["a", "c\npaper 000, Table 1", "chance", "<= 0.15", "0.11", "0.08516 .. 0.1348", "3", "holds", ""],
        ["a", "gain\npaper 000, Table 1", "LBE: +81 points", "in [0.5, 0.8]", "0.64", "0.5406 .. 0.7394", "3", "holds",
         ""],
        ["b", "deep\npaper 000, Table 1", "chance", "<= 0.15", "0.85", "0.2147 .. 1.485", "2", "fails",
         "1 of 3 seeds without a finite value"],
        ["b", "one_seed\npaper 000, Table 1", "chance", "<= 0.15", "0.12", "none: one seed", "1", "unreplicated",
         "one seed: its value satisfies the claim"]]
    assert [r["dots"] for r in rows] == [3, 3, 2, 1]  # one per finite seed value
    assert [r["class"] for r in rows] == ["holds", "holds", "fails", "unreplicated"]
    assert rows[2]["background"] == "rgb(255, 235, 233)" and rows[0]["background"] == "rgba(0, 0, 0, 0)"
    assert [r["href"] for r in rows] == ["a/report.html", "a/report.html", "b/claims.csv", "b/claims.csv"]
    costly = seen["Paper 003: 0 hold, 0 fail, 0 inconclusive, 0 unreplicated, 1 not at this scale of 1 (b)"]["rows"]
    assert costly[0]["cells"][8:] == ["not at this scale", "marked scale: paper, and this is a quick study"]
    assert costly[0]["cells"][4] == "0.11" and costly[0]["dots"] == 3
    shot = tmp_path / "claims.png"
    page.screenshot(path=str(shot), full_page=True)
    page.locator("td.study a").first.click()  # the study's link opens its report
    page.wait_for_url("**/a/report.html")
    assert page.locator("body").inner_text() == "report a"
    page.close()
    assert shot.stat().st_size > 10_000


def test_bad_claim_stops_snakemake_before_any_job(tmp_path):
    write_study(tmp_path, tiny({"select": {"depth": 3, "loss": "mse"}}))
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert ("layerlab config error: claims[0] (claim_0): select: loss 'mse' is not in the grid (values ['ce', "
            "'ce_lbe'])") in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
