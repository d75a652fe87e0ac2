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


# A dataset of a study's plug-in: the digest of the code that prepares it is in the params, so editing that code
# prepares it again (a built-in keeps rule `dataset`, whose params a study's plug-ins cannot change).
PLUGIN_DATASETS = "|".join(sorted(name for name in DATASETS if dataset_plugins(name))) or "(?!)"


use rule dataset as dataset_plugin with:
    params:
        plugins=lambda wildcards: canonical_json(dataset_plugins(wildcards.dataset)),
    wildcard_constraints:
        dataset=PLUGIN_DATASETS,


ruleorder: dataset_plugin > dataset
