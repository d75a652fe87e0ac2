rule collect:
    """All cells -> one study store with the grid axes as dimensions, and a tidy per-cell table."""
    input:
        expand(f"{OUT}/cells/{{cell}}/train.zarr", cell=CELLS),
    output:
        store=directory(f"{OUT}/metrics.zarr"),
        table=report(f"{OUT}/summary.csv", caption="../report/summary.rst", category="Summary"),
    params:
        cells=canonical_json(CELLS),
        axes=AXES,
    script:
        "../../scripts/collect.py"


rule plots:
    """Seaborn figures named by the config's `plots`."""
    input:
        rules.collect.output.store,
    output:
        [
            report(f"{OUT}/figures/{p['name']}.png", caption=f"../report/{p['kind']}.rst", category="Figures")
            for p in config["plots"]
        ],
    params:
        plots=canonical_json(config["plots"]),
    script:
        "../../scripts/plots.py"
