# Input and params functions shared by the rules.


def zarr_store(path: str) -> str:
    """A store as a Snakemake output: its root metadata file (layerlab.core.config.STORE_FILE)."""
    return f"{path}/{STORE_FILE}"


def cell_json(wildcards) -> str:
    """All of a cell's parameters as one canonical JSON string (the params rerun trigger)."""
    return canonical_json(CELLS[wildcards.cell])


def cell_dataset(wildcards) -> str:
    return f"resources/datasets/{CELLS[wildcards.cell]['dataset']}.npz"


def measurement_inputs(name: str, wildcards) -> dict[str, str]:
    """The dataset, the init weights (they also give the architecture) and the trained weights if it reads them."""
    cell = f"{OUT}/cells/{wildcards.cell}"
    final = {"final": f"{cell}/final.pt"} if "final" in MEASUREMENTS[name].reads else {}
    return {"data": cell_dataset(wildcards), "init": f"{cell}/init.pt", **final}


def plot_spec(wildcards) -> str:
    """What one figure draws, as readable one-line YAML (the report shows it): the plot without its words, which
    the captions rule writes (so new words do not redraw the figure)."""
    return flow_yaml({k: v for k, v in PLOTS[wildcards.plot].items() if k not in ("caption", "section")})
