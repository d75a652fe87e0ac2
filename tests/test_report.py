"""The report as a reader sees it: figures (each panel's own layers, legends, short labels with math, sizes), captions
per study, an outside plot kind through Snakemake, and the HTML report and its study page in a real headless
browser (layout at 1400 and 1920 px, the cell table's rows read back, sorted and filtered)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from conftest import ROOT, snakemake, write_study
from docutils.core import publish_parts

from layerlab.report.captions import plot_caption
from layerlab.report.labels import axis_label
from layerlab.report.plots import figure

PLUGIN = ROOT / "tests/plugins/layer_histogram.py"
WIDTHS = (1400, 1920)


def store(depths: tuple[int, ...] = (10, 50)) -> xr.Dataset:
    """A study store: batch entropy and alpha of cells of several depths (layers beyond a cell's depth are NaN)."""
    rng = np.random.default_rng(0)
    shape = (len(depths), 2, 3, max(depths))
    entropy, alpha = rng.uniform(0, 3, shape), np.full(shape, 0.2)
    for i, depth in enumerate(depths):
        entropy[i, :, :, depth:] = alpha[i, :, :, depth:] = np.nan
    alpha[:, 0] = np.nan  # only the LBE cells have a target
    alpha[:, 1, :, 0] = np.nan  # not the first layer (lbe_layers: middle)
    dims = ("depth", "loss", "step", "layer")
    ds = xr.Dataset({"batch_entropy": (dims, entropy), "alpha": (dims, alpha),
                     "test_acc": (("depth", "loss"), rng.uniform(0, 1, (len(depths), 2)))},
                    coords={"depth": list(depths), "loss": np.array(["ce", "ce_lbe"], dtype=object),
                            "step": [0, 50, 100], "layer": np.arange(max(depths))})
    ds["batch_entropy"].attrs.update(long_name="batch entropy H^l of each hidden layer's activations", units="nat")
    ds["alpha"].attrs.update(long_name="LBE target max(alpha_min, |alpha^l|) (NaN where not regularized)",
                             units="nat")
    ds["test_acc"].attrs.update(long_name="final test accuracy", units="1")
    return ds


def test_heatmap_panels_span_their_own_layers_and_the_colour_bar_label_fits():
    fig = figure(store(), {"kind": "layer_step_heatmap", "var": "batch_entropy", "row": "loss", "col": "depth"})
    panels, bar = fig.axes[:4], fig.axes[-1]
    assert [ax.get_title() for ax in panels] == ["loss=ce, depth=10", "loss=ce, depth=50", "loss=ce_lbe, depth=10",
                                                 "loss=ce_lbe, depth=50"]
    assert [ax.get_ylim() for ax in panels] == [(-0.5, 9.5), (-0.5, 49.5)] * 2  # not a shared 0-50 axis
    assert bar.get_ylabel() == r"batch entropy $H^l$ (nat)"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    label = bar.yaxis.label.get_window_extent(renderer)
    assert fig.bbox.x0 <= label.x0 and label.x1 <= fig.bbox.x1 and fig.bbox.y0 <= label.y0 <= label.y1 <= fig.bbox.y1
    plt.close(fig)


def test_trajectories_have_a_legend_in_every_panel_and_one_colour_per_layer():
    fig = figure(store((4, 6)), {"kind": "layer_trajectories", "var": "alpha", "col": "depth",
                                 "select": {"loss": "ce_lbe"}})
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2 and all(ax.get_legend() is not None for ax in panels)
    colours = [{line.get_label(): line.get_color() for line in ax.lines} for ax in panels]
    assert sorted(colours[0]) == ["1", "2", "3"] and sorted(colours[1]) == ["1", "2", "3", "4", "5"]
    assert all(colours[0][k] == colours[1][k] for k in colours[0])  # layer 3 has one colour in both panels
    assert fig._supylabel.get_text() == r"LBE target $\max(\alpha_{\min}, |\alpha^l|)$ (nat)"  # not the description
    plt.close(fig)
    fig = figure(store((10, 50)), {"kind": "layer_trajectories", "var": "batch_entropy", "col": "depth",
                                   "select": {"loss": "ce"}})
    assert all(ax.get_legend() is None for ax in fig.axes) and fig.axes[-1].get_ylabel() == "layer"  # a colour bar
    plt.close(fig)


def test_axis_labels_are_short_with_the_papers_symbols():
    ds = store()
    assert axis_label(ds["test_acc"]) == "test accuracy"
    ds["log10_kappa_x"] = ds["test_acc"].assign_attrs(long_name="log10 kappa_p(Sigma_x) (inf shown as 12)", units="1")
    assert axis_label(ds["log10_kappa_x"]) == r"$\log_{10}$ $\kappa_p(\Sigma_x)$"
    ds["my_var"] = ds["test_acc"].assign_attrs(long_name="a very long description of a plug-in variable", units="s")
    assert axis_label(ds["my_var"]) == "my var (s)"


def rendered(rst: str) -> str:
    """The HTML docutils makes of a caption, as Snakemake's report does; a markup error fails the test."""
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["body"]


def test_captions_say_what_the_figure_shows_in_its_study():
    ds = store()
    spec = {"name": "accuracy", "kind": "metric_vs_axis", "metric": "test_acc", "x": "depth", "hue": "loss",
            "caption": "Without LBE the deep networks fall to chance."}
    text = plot_caption(ds, spec)
    assert text.startswith("Without LBE the deep networks fall to chance.\n\nA per-cell final metric against one grid")
    assert "batch entropy" not in text.lower()  # the kind's caption is the same in every study
    html = rendered(text)
    assert "<tt class=\"docutils literal\">test_acc</tt>: final test accuracy" in html and "\\n" not in html
    html = rendered(plot_caption(ds, {"name": "a", "kind": "layer_trajectories", "var": "alpha", "col": "depth",
                                      "select": {"loss": "ce_lbe"}}))
    assert "max(alpha_min, |alpha^l|) (NaN where not regularized) (nat)" in html  # markup characters escaped
    assert "selected: loss = <tt" in html


def test_default_study_figures_show_the_paper():
    """config/config.yaml (the figures a newcomer sees first): each figure has a section and words of paper 000, no
    figure of a constant (alpha sits at alpha_min there)."""
    plots = yaml.safe_load((ROOT / "config/config.yaml").read_text())["plots"]
    assert all(p["section"].startswith("Paper 000, Sec.") and len(p["caption"]) > 100 for p in plots)
    assert "alpha" not in {p.get("var") for p in plots}


@pytest.mark.e2e
def test_an_outside_plot_kind_runs_end_to_end_and_its_parameters_are_typed(tmp_path, tiny_config):
    shutil.copy(PLUGIN, tmp_path / "my_plots.py")
    spec = {"name": "entropy_histogram", "kind": "layer_histogram", "var": "batch_entropy", "bins": 12,
            "section": "Paper 000, Sec. 3.2", "caption": "Collapsed layers pile up at zero."}
    tiny_config.update(plugins=["my_plots.py"], cells=[], plots=[spec])
    write_study(tmp_path, tiny_config)
    snakemake(tmp_path)
    figures = tmp_path / "results/tiny/figures"
    assert plt.imread(figures / "entropy_histogram.png").shape[:2] == (480, 675)  # 4.5 x 3.2 in at 150 dpi
    caption = (figures / "entropy_histogram.rst").read_text()
    assert caption.startswith("Collapsed layers pile up at zero.\n\nThe distribution of a per-layer quantity")
    snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text()
    assert "The distribution of a per-layer quantity over every layer" in html and "Paper 000, Sec. 3.2" in html
    with open(tmp_path / "my_plots.py", "a") as plugin:
        plugin.write("# edited\n")
    planned = snakemake(tmp_path, "-n").stdout  # editing the plug-in redraws its figure and caption, nothing else
    assert re.search(r"^plots\s+1$", planned, re.M) and re.search(r"^captions\s+1$", planned, re.M), planned
    assert not re.search(r"^(train|collect)\s", planned, re.M)
    for value, error in (("ten", "bins: 'ten' is not of type 'integer'"), (0, "bins: 0 is less than the minimum of 1")):
        tiny_config["plots"][0]["bins"] = value
        write_study(tmp_path, tiny_config)
        proc = snakemake(tmp_path, "-n", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in out, out[-2000:]
        assert f"layerlab config error: plots[0] (entropy_histogram): {error}\n" in out
    tiny_config["plots"][0].update(bins=12, bns=3)
    write_study(tmp_path, tiny_config)
    proc = snakemake(tmp_path, "-n", check=False)
    assert "`bns` is not used by kind layer_histogram (it takes var, step, bins) (did you mean 'bins'?)" in \
        proc.stdout + proc.stderr


def test_the_plugin_docs_show_the_plot_kind_file_as_it_is():
    docs = (ROOT / "docs/PLUGINS.md").read_text()
    code = PLUGIN.read_text()
    assert code[code.index("import matplotlib"):] in docs


# --- the report in a browser ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The default study (config/config.yaml), shortened, with one diverging cell, run and reported."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["fixed"].update(width=16, steps=40, log_every=10, eval_every=20)
    config["grid"]["seed"] = [0]  # one seed: the diverging cell below is a seventh
    config["cells"] = [{"depth": 10, "loss": "ce", "seed": 1, "optimizer": "sgd", "lr": 1.0e12}]
    workdir = tmp_path_factory.mktemp("report")
    write_study(workdir, config)
    snakemake(workdir)
    snakemake(workdir, "--report", str(workdir / "report.html"))
    return workdir


def box(page, selector: str, frame=None) -> dict:
    return (frame or page).locator(selector).first.bounding_box()


VERDICT_COLOURS = {"verdict-holds": "rgb(21, 128, 61)", "verdict-fails": "rgb(185, 28, 28)",
                   "verdict-inconclusive": "rgb(180, 83, 9)", "verdict-unreplicated": "rgb(71, 85, 105)",
                   "verdict-not-measurable": "rgb(71, 85, 105)", "verdict-not-at-this-scale": "rgb(71, 85, 105)"}


@pytest.mark.e2e
@pytest.mark.parametrize("width", WIDTHS)
def test_report_opens_with_the_claims_then_the_figures(report, browser, width):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto((report / "report.html").as_uri())
    page.wait_for_selector("#rulegraph svg, #rulegraph canvas")
    shots = Path(os.environ.get("LAYERLAB_SCREENSHOTS", report))
    page.screenshot(path=shots / f"report_{width}.png")
    table, graph = box(page, ".prose table"), box(page, "#rulegraph")
    assert 0 <= table["y"] < 200  # from the top of the page, not centred off-screen or under blank space
    assert graph["y"] >= table["y"] + table["height"]  # the rule graph below the claims table, not over it
    headers = page.locator(".prose table th").all_inner_texts()
    cells = page.locator(".prose table tbody tr").first.locator("td")
    paper, note = (cells.nth(headers.index(name)).bounding_box() for name in ("paper", "note"))
    verdicts = page.evaluate("() => [...document.querySelectorAll('.prose table span[class^=verdict-]')]"
                             ".map(span => [span.className, getComputedStyle(span).color])")
    assert verdicts and all(colour == VERDICT_COLOURS[verdict] for verdict, colour in verdicts), verdicts
    assert paper["width"] >= 120  # several words per line
    assert note["x"] + note["width"] <= width  # the last column inside the window
    images = page.locator("figure.layerlab-figure img")
    assert images.count() == 3
    assert page.evaluate("() => [...document.querySelectorAll('figure.layerlab-figure img')]"
                         ".every(img => img.complete && img.naturalWidth > 300)")
    captions = page.locator("figure.layerlab-figure figcaption").all_inner_texts()
    assert "falls to chance accuracy" in captions[0] and "Drawn (accuracy_vs_depth, kind metric_vs_axis)" in captions[0]
    sections = page.locator(".prose h2").all_inner_texts()
    assert sections == ["Paper 000, Sec. 4.3 (Table 1): deep vanilla FNNs",
                        "Paper 000, Sec. 3.2 (Figs. 2, 5): information flow through the layers",
                        "Paper 000, Sec. 4.2 (Fig. 6): training deep vanilla networks"]
    results = page.evaluate("() => results")
    figures = {k: v for k, v in results.items() if k.endswith(".png")}
    for result in figures.values():  # the info panel: readable parameters and caption
        assert "\\" not in result["job_properties"]["params"] and "\\n" not in result["caption"]
    assert figures["results/digits_batch_entropy/figures/accuracy_vs_depth.png"]["job_properties"]["params"] == (
        "spec={hue: loss, kind: metric_vs_axis, logx: false, metric: test_acc, name: accuracy_vs_depth, x: depth}")
    page.close()


@pytest.mark.e2e
def test_study_page_has_the_config_the_grid_and_a_sortable_filterable_cell_table(report, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto((report / "report.html").as_uri())
    page.get_by_text("study page").click()
    frame = page.frame_locator("iframe")
    rows = frame.locator("#cells tbody tr")
    rows.first.wait_for()  # the page loads in the report's frame
    assert rows.count() == 7
    headers = frame.locator("#cells thead tr").first.locator("th").all_inner_texts()
    assert headers[:4] == ["depth", "loss", "seed", "status"] and "test_acc" in headers
    col = {name: i for i, name in enumerate(headers)}

    def column(name: str) -> list[str]:
        return [t.strip() for t in rows.locator(f"td:nth-child({col[name] + 1})").all_inner_texts()]

    summary = pd.read_csv(report / "results/digits_batch_entropy/summary.csv")  # the rows read back equal it
    expected = {(str(r.depth), r.loss, str(r.seed)): r.test_acc for r in summary.itertuples()}
    shown = {(d, loss, s): float(acc) if acc else np.nan for d, loss, s, acc in
             zip(column("depth"), column("loss"), column("seed"), column("test_acc"), strict=True)}
    assert shown.keys() == expected.keys()
    np.testing.assert_allclose([shown[k] for k in expected], list(expected.values()), rtol=5e-4)
    statuses = [s.split()[0] for s in column("status")]
    assert statuses.count("diverged") == 1 and statuses[column("seed").index("1")] == "diverged"
    frame.locator("#cells thead tr").first.locator("th").nth(col["test_acc"]).click()
    values = [float(v) if v else np.inf for v in column("test_acc")]
    assert values == sorted(values)
    frame.locator("#cells .filters input").nth(col["loss"]).fill("ce_lbe")
    frame.locator("#cells .filters input").nth(col["depth"]).fill(">=30")
    visible = rows.filter(visible=True)
    assert visible.count() == 2 and frame.locator("#shown").inner_text() == "2 of 7 cells shown"
    frame.locator("#cells .filters input").nth(col["loss"]).fill("")
    frame.locator("#cells .filters input").nth(col["depth"]).fill("")
    diverged = rows.filter(has_text="diverged").first
    diverged.locator("a.log-link").click()
    log = frame.locator("details[id^=log-][open]")
    assert log.count() == 1 and "depth~10/loss~ce/seed~1" in log.locator("summary").inner_text()
    assert "diverged True" in log.locator("pre").first.inner_text()  # the cell's own lines (packed or not)
    config = yaml.safe_load(frame.locator("#config").inner_text())
    assert config["study"] == "digits_batch_entropy" and config["grid"]["depth"] == [10, 30, 50]
    assert config["plots"][0]["section"].startswith("Paper 000")
    grid = frame.locator("table.grid").inner_text()
    assert re.search(r"depth\s+10, 30, 50", grid) and re.search(r"seed\s+0, 1", grid)
    shots = Path(os.environ.get("LAYERLAB_SCREENSHOTS", report))
    page.screenshot(path=shots / "study_page_1400.png")
    page.close()

