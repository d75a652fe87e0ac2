"""Rules named after each registered measurement: measure one cell's networks -> <measurement>.zarr."""

import torch

from layerlab.core.disk import WriteFailed
from layerlab.core.registry import MEASUREMENTS, resolve
from layerlab.core.store import describe, write_store
from layerlab.nets.models import load_init
from layerlab.workflow.runtime import cell_job, job_attrs, run_script

snakemake = globals()["snakemake"]


def main() -> None:
    cell, device, data, init = cell_job(snakemake)  # loads the study's plug-ins
    spec = MEASUREMENTS[snakemake.rule]
    networks = {"init": init}
    if "final" in spec.reads:
        networks["final"] = load_init(snakemake.input.init, cell)
        networks["final"].load_state_dict(torch.load(snakemake.input.final, map_location="cpu"))
    ds = resolve(spec.impl)(cell, data, {name: networks[name] for name in spec.reads}, device)
    describe(ds, spec.variables).attrs.update(job_attrs(snakemake))
    write_store(ds, snakemake.output.store)


run_script(main, ValueError, WriteFailed)
