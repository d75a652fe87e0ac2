"""Rule `representation`: per-layer LSD, k-redundancy and selection entropy of the cell's init and final
network -> representation.zarr."""

import torch

from layerlab.models import load_init
from layerlab.probes.representation import run_representation
from layerlab.runtime import cell_job, run_script
from layerlab.store import write_store

snakemake = globals()["snakemake"]


def main() -> None:
    cell, device, data, init = cell_job(snakemake)
    final = load_init(snakemake.input.init, cell)
    final.load_state_dict(torch.load(snakemake.input.final, map_location="cpu"))
    ds = run_representation(cell, data, {"init": init, "final": final}, device)
    ds.attrs.update(config=snakemake.params.cell, cell_id=snakemake.wildcards.cell)
    write_store(ds, snakemake.output.store)


run_script(main, ValueError)
