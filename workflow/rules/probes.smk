rule cascade:
    """Reconstruction-entropy cascade on the untrained (init) network of a cell -> cascade.zarr."""
    input:
        init=rules.init.output[0],
        data=cell_dataset,
    output:
        store=directory(f"{OUT}/cells/{{cell}}/cascade.zarr"),
    params:
        cell=cell_json,
    threads: config["threads"]
    script:
        "../../scripts/cascade.py"


rule representation:
    """Per-layer representation measures (paper 001, ch. 5: LSD, k-redundancy, selection entropy) of the untrained
    (init) and trained (final) network on a fixed class-balanced probe subset -> representation.zarr."""
    input:
        init=rules.init.output[0],
        final=rules.train.output.model,
        data=cell_dataset,
    output:
        store=directory(f"{OUT}/cells/{{cell}}/representation.zarr"),
    params:
        cell=cell_json,
    threads: config["threads"]
    script:
        "../../scripts/representation.py"
