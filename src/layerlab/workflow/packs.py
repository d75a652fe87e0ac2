"""Cell packs in the workflow: which cells a study trains together, and how each cell's train job takes over what its
pack trained (torch-free: the Snakefile plans with it, and a take-over imports no torch).

Planning (`plan`): the cells without a training store are the ones a run trains. They are grouped by everything but
their per-model parameters (the cell schema's `per_model: true` keys, plug-ins' included: cells of one group can fuse
into one network, `layerlab.training.pack`), each group cut into chunks of at most `max_cells`; the chunks are then
put into packs of at most `max_cells` cells (cells of different groups share a pack's process and train one after
another), and big packs are split until there are at least as many packs as cores. A pack is one job (rule `pack`)
that writes every member's outputs to its staging folder and a manifest; each member's own job (rule `take_over`),
which has the manifest as an input, then moves them into place (`take_over`). So every cell keeps its own outputs, log,
checkpoint and Snakemake record: collect, measurements, diff and reruns see cells, never packs. A cell that already
has a store (a changed cell, say) is not packed and trains in its own job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from layerlab.core.cell import Cell
from layerlab.core.config import canonical_json
from layerlab.workflow.jobs import log_to

STAGED = ("train.zarr", "init.pt", "final.pt")


def pack_key(cell: Cell, per_model: Iterable[str]) -> str:
    """What cells must share to fuse: every parameter but the per-model ones, and whether SGD has momentum (a
    momentum buffer or none)."""
    shared = {k: v for k, v in cell.to_dict().items() if k not in set(per_model)}
    return canonical_json({**shared, "momentum_on": bool(cell.optimizer.momentum)})


def chunks(items: list[str], size: int) -> list[list[str]]:
    """`items` in ceil(len / size) consecutive chunks of near-equal length."""
    n = math.ceil(len(items) / size)
    return [items[i * len(items) // n:(i + 1) * len(items) // n] for i in range(n)]


def pack_id(members: list[str], cells: Mapping[str, Cell]) -> str:
    """A name for the pack from its members' parameters (a rerun with the same members reuses nothing of it: its
    manifest is a temporary output)."""
    digest = hashlib.sha256(canonical_json({c: cells[c].to_dict() for c in members}).encode()).hexdigest()
    return f"pack_{digest[:12]}"


def plan(cells: Mapping[str, Cell], stored: Callable[[str], bool], per_model: Iterable[str], max_cells: int,
         cores: int) -> dict[str, list[str]]:
    """Pack id -> member cell ids (sorted), over the cells without a store."""
    per_model = set(per_model)
    groups: dict[str, list[str]] = {}
    for cid in sorted(cells):
        if not stored(cid):
            groups.setdefault(pack_key(cells[cid], per_model), []).append(cid)
    pieces = sorted((c for group in groups.values() for c in chunks(group, max_cells)), key=len, reverse=True)
    bins: list[list[list[str]]] = []
    for piece in pieces:  # first fit, largest first: pieces of one fusable group stay whole
        home = next((b for b in bins if sum(map(len, b)) + len(piece) <= max_cells), None)
        if home is None:
            bins.append([piece])
        else:
            home.append(piece)
    packs = [[c for piece in b for c in piece] for b in bins]
    while len(packs) < cores and max(map(len, packs), default=1) > 1:
        largest = max(packs, key=len)
        packs.remove(largest)
        packs += chunks(largest, math.ceil(len(largest) / 2))
    return {pack_id(sorted(p), cells): sorted(p) for p in packs if len(p) > 1}


def work(cell: Cell) -> float:
    """A cell's training cost, estimated without torch for ordering jobs only: steps x batch x depth x width^2 (the
    multiply-adds of a stack of equal layers; a convolution's kernel and map size are common to a study's cells)."""
    return float(cell.run.steps * cell.run.batch_size * cell.model.depth * cell.model.width ** 2)


def longest_first(jobs: Mapping[str, float]) -> dict[str, int]:
    """Job -> scheduling priority, its rank by estimated work (1 for the least): the costliest training jobs start
    first, so that the cheap ones fill the cores at the end instead of one long job running alone (Snakemake runs the
    ready jobs of highest priority first)."""
    return {job: rank for rank, job in enumerate(sorted(jobs, key=lambda j: (jobs[j], j)), start=1)}


def staged(staging: str | os.PathLike, cell_id: str) -> Path:
    """Where a pack stages one member's outputs."""
    return Path(staging) / "cells" / cell_id


def write_manifest(path: str | os.PathLike, staging: str | os.PathLike, log: str | os.PathLike,
                   members: dict[str, str]) -> None:
    """The pack's manifest: member -> its canonical parameters; where their outputs are staged; the pack's log."""
    Path(path).write_text(json.dumps({"staging": str(staging), "log": str(log), "cells": members}, indent=1))


def take_over(manifest: dict, cell_id: str, cell_json: str, outputs: dict[str, str]) -> bool:
    """Move the outputs a pack trained for this cell into place (train.zarr, init.pt, final.pt); False when the pack
    staged none for it, or for other parameters (then the cell trains itself)."""
    if manifest["cells"].get(cell_id) != cell_json:
        return False
    source = staged(manifest["staging"], cell_id)
    if not all((source / name).exists() for name in STAGED):
        return False
    target = Path(outputs["store"]).parent  # the store's root metadata file is the rule's output
    shutil.rmtree(target, ignore_errors=True)  # what a removed output left: the store's arrays
    os.replace(source / "train.zarr", target)
    os.replace(source / "init.pt", outputs["init"])
    os.replace(source / "final.pt", outputs["model"])
    for folder in [source, *source.parents]:  # the staging folders it emptied, up to the pack's
        if folder == Path(manifest["staging"]).parent:
            break
        try:
            folder.rmdir()
        except OSError:  # not empty, or a mate's take_over, running beside this one, removed it first
            break
    return True


def take_over_job(snakemake) -> bool:
    """A packed cell's take_over job: its outputs moved in place, its log given its lines of the pack's log."""
    manifest = json.loads(Path(snakemake.input.pack).read_text())
    cell_id = snakemake.wildcards.cell
    if not take_over(manifest, cell_id, snakemake.params.cell, dict(snakemake.output.items())):
        return False
    log_to(snakemake.log[0])  # no plug-ins to import: nothing of theirs runs here
    lines = Path(manifest["log"]).read_text().splitlines() if Path(manifest["log"]).exists() else []
    mine = [line for line in lines if re.search(re.escape(cell_id) + r"(?=[:\s/)])", line)]
    logging.info("trained in a pack of %d cells (log: %s); its lines:\n%s", len(manifest["cells"]), manifest["log"],
                 "\n".join(mine))
    return True
