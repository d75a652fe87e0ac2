rule collect:
    """All cells (training and probe stores) -> one study store with the grid axes as dimensions, a tidy
    per-cell table and the study-level figures of merit."""
    input:
        # per cell, in CELLS order: its training store, and the store of each measurement it reads
        train=[zarr_store(f"{OUT}/cells/{c}/train.zarr") for c in sorted(CELLS)],  # the order of params.cells
        **{p: [zarr_store(f"{OUT}/cells/{sources[c]}/{p}.zarr") for c in sorted(CELLS)]
           for p, sources in PROBE_SOURCES.items()},
    output:
        store=zarr_store(f"{OUT}/metrics.zarr"),
        table=report(f"{OUT}/summary.csv", caption="../report/summary.rst", category="Summary"),
        study=report(f"{OUT}/study_summary.csv", caption="../report/study_summary.rst", category="Summary"),
    params:
        cells=canonical_json(CELLS),
        axes=AXES,
        measurements=PROBES,
        trainability=canonical_json(config["trainability"]),
    log:
        f"{OUT}/logs/collect.log",
    benchmark:
        f"{OUT}/benchmarks/collect.tsv"  # seconds and peak memory (bench/dag_scale.py reads it)
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/collect.py"


rule plots:
    """One seaborn figure of the config's `plots` per job: a figure that fails leaves the others in place."""
    input:
        rules.collect.output.store,
    output:
        report(f"{OUT}/figures/{{plot}}.png", caption="../report/plot.rst", category="Figures"),
    params:
        spec=lambda wildcards: canonical_json(PLOTS[wildcards.plot]),
        caption=lambda wildcards: PLOT_CAPTIONS[PLOTS[wildcards.plot]["kind"]],
    log:
        f"{OUT}/logs/plots/{{plot}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/plots.py"
