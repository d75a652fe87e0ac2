# Input and params functions shared by the rules.


def zarr_store(path: str) -> str:
    """A store as a Snakemake output: its root metadata file (layerlab.core.config.STORE_FILE)."""
    return f"{path}/{STORE_FILE}"


def cell_json(wildcards) -> str:
    """All of a cell's parameters as one canonical JSON string (the params rerun trigger)."""
    return CELLS[wildcards.cell].json


def plugin_code(rule: str) -> dict:
    """The `plugins` params entry of a per-cell rule: the digest of each plug-in source a job runs
    (layerlab.workflow.plugin_code), so that editing a plug-in reruns the jobs that ran it. A study without plug-ins
    has no entry: adding one would change the params of every finished job, and rerun it."""
    if not config["plugins"]:
        return {}
    measurement = None if rule == "train" else rule
    return {"plugins": lambda wildcards: canonical_json(job_plugins(CELLS[wildcards.cell], measurement))}


def pack_plugin_code(wildcards) -> str:
    """Each member's `plugins` params of its train job (what its store records), for the pack that trains it."""
    members = PACKS[wildcards.pack]
    return canonical_json({c: canonical_json(job_plugins(CELLS[c])) for c in members} if config["plugins"] else {})


def cell_dataset(wildcards) -> str:
    return f"resources/datasets/{CELLS[wildcards.cell].data.dataset}.npz"


def pack_manifest(wildcards) -> str:
    """The manifest of the pack that trains the cell in this run."""
    return f"{OUT}/packs/{PACK_OF[wildcards.cell]}.json"


def measurement_inputs(name: str, wildcards) -> dict[str, str]:
    """The dataset, the init weights (they also give the architecture) and the trained weights if it reads them."""
    cell = f"{OUT}/cells/{wildcards.cell}"
    final = {"final": f"{cell}/final.pt"} if "final" in MEASUREMENTS[name].reads else {}
    return {"data": cell_dataset(wildcards), "init": f"{cell}/init.pt", **final}
