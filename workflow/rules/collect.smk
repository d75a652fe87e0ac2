rule collect:
    """All cells (training and probe stores) -> one study store with the grid axes as dimensions, a tidy
    per-cell table and the study-level figures of merit."""
    input:
        # per cell, in CELLS order: its training store, and the store of each measurement it reads
        train=[zarr_store(f"{OUT}/cells/{c}/train.zarr") for c in sorted(CELLS)],  # the order of params.cells
        **{p: [zarr_store(f"{OUT}/cells/{sources[c]}/{p}.zarr") for c in sorted(CELLS)]
           for p, sources in MEASUREMENT_SOURCES.items()},
    output:
        store=zarr_store(f"{OUT}/metrics.zarr"),
        table=report(f"{OUT}/summary.csv", caption="../report/summary.rst", category="Summary"),
        study=report(f"{OUT}/study_summary.csv", caption="../report/study_summary.rst", category="Summary"),
    params:
        cells=canonical_json({c: cell.to_dict() for c, cell in CELLS.items()}),
        axes=AXES,
        measurements=MEASURED,
        trainability=canonical_json(config["trainability"]),
    log:
        f"{OUT}/logs/collect.log",
    benchmark:
        f"{OUT}/benchmarks/collect.tsv"  # seconds and peak memory (bench/dag_scale.py reads it)
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/collect.py"
