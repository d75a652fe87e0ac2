rule pack:
    """Train a pack's cells in one process (layerlab.training.pack: cells of one architecture fused into one network,
    bit for bit as each alone), each resuming from its own checkpoint; stage each cell's train.zarr, init.pt and
    final.pt for its own take_over job, which moves them into place. The manifest is temporary: once every member has
    taken over, nothing of the pack is left but its log."""
    input:
        **{dataset: f"resources/datasets/{dataset}.npz" for dataset in sorted({c.data.dataset for c in CELLS.values()})},
    output:
        manifest=temp(f"{OUT}/packs/{{pack}}.json"),
    params:
        cells=lambda wildcards: canonical_json({c: CELLS[c].to_dict() for c in PACKS[wildcards.pack]}),
        staging=f"{OUT}/packs/{{pack}}",
        checkpoints=f"{OUT}/checkpoints",
        plugins=pack_plugin_code,
    threads: config["threads"]
    priority: lambda wildcards: TRAIN_PRIORITY[wildcards.pack]
    resources:
        gpu=1 if GPUS else 0,
    log:
        f"{OUT}/logs/packs/{{pack}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/pack.py"
