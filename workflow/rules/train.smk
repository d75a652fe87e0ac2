rule train:
    """Build one ablation cell's network with its seeded initial weights (init.pt, read by the measurements of the
    untrained network) and train it (CUDA when available) with the in-training probes -> train.zarr, final.pt.
    One job per cell: a separate init job would double the DAG, and init.pt is the same whichever job writes it.
    A cell in a pack (layerlab.workflow.packs) takes over the outputs its pack job staged instead."""
    input:
        unpack(train_inputs),
    output:
        store=zarr_store(f"{OUT}/cells/{{cell}}/train.zarr"),
        init=f"{OUT}/cells/{{cell}}/init.pt",
        model=f"{OUT}/cells/{{cell}}/final.pt",
    params:
        cell=cell_json,
        checkpoint=f"{OUT}/checkpoints/{{cell}}",  # not an output: a failed or killed job keeps it
        **plugin_code("train"),
    threads: config["threads"]
    resources:
        gpu=1 if GPUS else 0,
    log:
        f"{OUT}/logs/train/{{cell}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/train.py"
