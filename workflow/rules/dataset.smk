rule dataset:
    """Prepare a dataset once: uint8 images + labels (.npz) and provenance with checksum (.json)."""
    output:
        npz="resources/datasets/{dataset}.npz",
        meta="resources/datasets/{dataset}.json",
    params:
        downloads="resources/downloads",
    log:
        "resources/datasets/{dataset}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/dataset.py"
