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


def plot_plugin_code(per_plot: bool) -> dict:
    """The `plugins` params entry of the plots rule (`per_plot`) or the captions rule: the digest of the plug-in code
    of the plot kinds drawn, so that editing a plug-in kind redraws its figures; none in a study without plug-ins."""
    if not config["plugins"]:
        return {}
    if per_plot:
        return {"plugins": lambda wildcards: flow_yaml(plot_plugins([PLOTS[wildcards.plot]["kind"]]))}
    return {"plugins": flow_yaml(plot_plugins(p["kind"] for p in PLOTS.values()))}


def plot_spec(wildcards) -> str:
    """What one figure draws, as readable one-line YAML (the report shows it): the plot without its words, which
    the captions rule writes (so new words do not redraw the figure)."""
    return flow_yaml({k: v for k, v in PLOTS[wildcards.plot].items() if k not in ("caption", "section")})
