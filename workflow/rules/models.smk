rule init:
    """Seeded initial weights, shared by training and by probes of the untrained network."""
    input:
        data=cell_dataset,
    output:
        f"{OUT}/cells/{{cell}}/init.pt",
    params:
        cell=cell_json,
    log:
        f"{OUT}/logs/init/{{cell}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/init.py"


rule train:
    """Train one ablation cell (CUDA when available) with the in-training probes -> train.zarr."""
    input:
        init=rules.init.output[0],
        data=cell_dataset,
    output:
        store=directory(f"{OUT}/cells/{{cell}}/train.zarr"),
        model=f"{OUT}/cells/{{cell}}/final.pt",
    params:
        cell=cell_json,
        checkpoint=f"{OUT}/checkpoints/{{cell}}",  # not an output: a failed or killed job keeps it
    threads: config["threads"]
    resources:
        gpu=1 if GPUS else 0,
    log:
        f"{OUT}/logs/train/{{cell}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/train.py"
