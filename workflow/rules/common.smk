# Input and params functions shared by the rules.


def zarr_store(path: str) -> str:
    """A store as a Snakemake output: its root metadata file (layerlab.core.config.STORE_FILE)."""
    return f"{path}/{STORE_FILE}"


def cell_json(wildcards) -> str:
    """All of a cell's parameters as one canonical JSON string (the params rerun trigger)."""
    return canonical_json(CELLS[wildcards.cell])


def cell_dataset(wildcards) -> str:
    return f"resources/datasets/{CELLS[wildcards.cell]['dataset']}.npz"


def train_inputs(wildcards) -> dict[str, str]:
    """The cell's dataset, and the manifest of the pack that trains it in this run."""
    pack = PACK_OF.get(wildcards.cell)
    return {"data": cell_dataset(wildcards), **({"pack": f"{OUT}/packs/{pack}.json"} if pack else {})}


def measurement_inputs(name: str, wildcards) -> dict[str, str]:
    """The dataset, the init weights (they also give the architecture) and the trained weights if it reads them."""
    cell = f"{OUT}/cells/{wildcards.cell}"
    final = {"final": f"{cell}/final.pt"} if "final" in MEASUREMENTS[name].reads else {}
    return {"data": cell_dataset(wildcards), "init": f"{cell}/init.pt", **final}
