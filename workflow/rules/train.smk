# A cell's outputs, params and log, whichever of the two rules makes them: the same params (the rerun trigger) and
# the same script, so a cell trained in a pack reads as trained alone to every later run.
TRAIN_OUTPUTS = {"store": zarr_store(f"{OUT}/cells/{{cell}}/train.zarr"), "init": f"{OUT}/cells/{{cell}}/init.pt",
                 "model": f"{OUT}/cells/{{cell}}/final.pt"}
TRAIN_PARAMS = {"cell": cell_json, "checkpoint": f"{OUT}/checkpoints/{{cell}}",  # not an output: a failed job keeps it
                **plugin_code("train")}
TRAIN_LOG = f"{OUT}/logs/train/{{cell}}.log"


rule train:
    """Build one ablation cell's network with its seeded initial weights (init.pt, read by the measurements of the
    untrained network) and train it (CUDA when available) with the in-training probes -> train.zarr, final.pt.
    One job per cell: a separate init job would double the DAG, and init.pt is the same whichever job writes it."""
    input:
        data=cell_dataset,
    output:
        **TRAIN_OUTPUTS,
    params:
        **TRAIN_PARAMS,
    threads: config["threads"]
    priority: lambda wildcards: TRAIN_PRIORITY[wildcards.cell]
    resources:
        gpu=1 if GPUS else 0,
    log:
        TRAIN_LOG,
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/train.py"


rule take_over:
    """A cell its pack trained in this run (layerlab.workflow.packs): move the outputs the pack job staged into
    place (a few file moves, no torch; on a cluster, on the submitting machine)."""
    input:
        pack=pack_manifest,
    output:
        **TRAIN_OUTPUTS,
    params:
        **TRAIN_PARAMS,
    wildcard_constraints:
        cell=PACKED,
    log:
        TRAIN_LOG,
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/train.py"


localrules:
    take_over,


ruleorder: take_over > train
