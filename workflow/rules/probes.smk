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
