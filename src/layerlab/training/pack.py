"""Cell packs: several cells trained in one process, those of one architecture as one fused network.

`train_pack` prepares every cell as the unfused path does (`layerlab.training.loop.Loop`: its own objective, regime,
probes, batch stream, records and checkpoint; its global-RNG stream captured once its network is built), resumes
each from its own checkpoint, and groups the cells that can step together: backprop cells at the same step whose
networks fuse (`layerlab.training.fused`) and whose probes declare that they run in a pack. A group trains as one
fused network with one fused optimizer step (`layerlab.training.fused_optim`); everything per cell (batches,
objective, records, probes, evaluation, schedules, checkpoints) stays with the cell's own Loop, on its own network,
whose parameters are views of its slice of the fused ones. So a cell's results and checkpoints do not depend on
whether, or with which other cells, it was packed (on the CPU bit for bit; tests/test_pack.py). A cell that leaves
its group (its last step, a non-finite loss) gets its own storage back before the group's next update; the others
are fused anew. Cells that cannot fuse train one after another in the same process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import xarray as xr
from torch import nn

from layerlab.catalog.checks import active_probes
from layerlab.core.cell import Cell
from layerlab.core.registry import PROBES, REGIMES
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.nets.models import build_model
from layerlab.training.checkpoint import Checkpoint, Interrupted
from layerlab.training.fused import ModelRNG, NotFusable, fuse, unfuse
from layerlab.training.fused_optim import FusedOptimizer, FusedParam, own_state
from layerlab.training.loop import Loop, train_cell
from layerlab.training.memory import first_batch, stage_memory
from layerlab.training.progress import ProgressWriter, finished
from layerlab.training.stage import Stage, StepState

log = logging.getLogger("layerlab.training.pack")
HEADROOM = 0.8  # of a GPU's free memory a fused group may take: the allocator's overhead and workspaces need the rest


@dataclass
class Member:
    """One cell of a pack: its Loop, the stage it trains, where it resumes, its checkpoint and RNG stream."""

    name: str
    loop: Loop
    stage: Stage
    start: int
    checkpoint: Checkpoint | None
    rng: torch.Tensor  # its global-RNG state, swapped in whenever its own code runs
    seconds: float = 0.0  # its share of the group's wall time

    @property
    def model(self) -> Network:
        return self.loop.model


def unfused_reason(cell: Cell, model: Network, fuse_convolutions: bool) -> str | None:
    """Why a cell trains on its own (its regime or a probe does not run in a pack, or its convolutions would be
    slower fused), or None."""
    if not REGIMES[cell.regime.training].packs:
        return f"training '{cell.regime.training}' does not run in a pack"
    if blocked := [name for name in active_probes(cell) if not PROBES[name].packs]:
        return f"training probe(s) {', '.join(blocked)} do not run in a pack"
    if not fuse_convolutions and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return ("convolutions: they run per model in a fused network, which on the CPU is slower than one cell after "
                "another (bench/pack_speed.py, case d)")
    return None


@dataclass
class Built:
    """A cell's network with its initial weights, and the global-RNG state right after building it: where the
    cell's own stream continues (what its training alone would draw from, e.g. dropout masks)."""

    model: Network
    rng: torch.Tensor


def build(cell: Cell, data: Dataset) -> Built:
    model = build_model(cell, data.input_shape, data.n_classes)
    return Built(model, torch.get_rng_state())


def train_pack(cells: dict[str, Cell], data: dict[str, Dataset], built: dict[str, Built], device: torch.device,
               checkpoints: Mapping[str, Checkpoint | None],
               writers: dict[str, tuple[ProgressWriter, ...]] | None = None,
               fuse_convolutions: bool | None = None) -> dict[str, tuple[xr.Dataset, Network]]:
    """Train every cell (name -> cell, its dataset, its built network, its checkpoint, its progress writers); return
    each cell's metrics Dataset and trained network, as `train_cell` would alone. Convolutional networks fuse where
    `fuse_convolutions` says (by default off the CPU only)."""
    writers = writers or {}
    fuse_convolutions = device.type != "cpu" if fuse_convolutions is None else fuse_convolutions
    results, members = {}, []
    for name, cell in cells.items():
        torch.set_rng_state(built[name].rng)  # the cell's own stream, as if its network had just been built
        checkpoint, model = checkpoints[name], built[name].model.to(device)
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is not None and "result" in saved:  # trained before, its outputs not written: only write them
            model.load_state_dict(saved["result"]["model"])
            results[name] = finished(saved["result"]["dataset"], writers.get(name, ())), model
        elif reason := unfused_reason(cell, model, fuse_convolutions):
            log.info("%s trains unfused: %s", name, reason)
            results[name] = train_cell(cell, data[name], model, device, checkpoint, writers.get(name, ()))
        else:
            members.append(prepare(name, cell, data[name], model, checkpoint, saved, writers.get(name, ())))
    budget = device_budget(device)
    for group in fusable_groups(members):
        for part in fitting(group, budget):
            for m in Group(part).train():
                results[m.name] = m.loop.result(m.stage, m.seconds)
                if m.checkpoint is not None:  # before any output is written
                    m.checkpoint.save_result(*results[m.name])
    return {name: results[name] for name in cells}


def prepare(name: str, cell: Cell, data: Dataset, model: Network, checkpoint: Checkpoint | None,
            saved: dict | None = None, writers: tuple[ProgressWriter, ...] = ()) -> Member:
    """The cell's Loop and stage as the unfused path builds them (its RNG stream right after), resumed from `saved`,
    its checkpoint's state."""
    loop = Loop(cell, data, model, name=name, writers=writers)
    if checkpoint is not None:
        checkpoint.check_probes(zip(loop.names, loop.probes, strict=True))
    if saved is not None:
        loop.regime.load_state_dict(saved["regime"])
    stage = loop.regime.stage(0)
    start = 0 if saved is None else loop.restore(stage, saved)
    return Member(name, loop, stage, start, checkpoint, torch.get_rng_state())


def signature(member: Member) -> tuple:
    """What cells stepping as one fused network share: the step they are at, their parameters' shapes and kinds,
    which parameters their optimizer trains (e.g. `freeze_weights`), batch rows and optimizer kind (momentum on or
    off)."""
    optimizer = member.stage.optimizer
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return (member.start, member.stage.index, type(optimizer).__name__, bool(optimizer.param_groups[0].get("momentum")),
            tuple((name, tuple(t.shape)) for name, t in member.model.state_dict().items()),
            tuple(name for name, p in member.model.named_parameters() if id(p) in trained),
            member.loop.batch_rows, id(member.loop.data))


def fusable_groups(members: list[Member]) -> list[list[Member]]:
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(signature(member), []).append(member)
    return list(groups.values())


def device_budget(device: torch.device) -> int | None:
    """Bytes a fused group may hold on a GPU: HEADROOM of its free memory (None on the CPU: no limit)."""
    if device.type != "cuda":
        return None
    return int(HEADROOM * torch.cuda.mem_get_info(device)[0])


def fitting(group: list[Member], budget: int | None) -> list[list[Member]]:
    """The group in consecutive parts that fit `budget` bytes, at what one training step of its first cell holds
    (its parameters, gradients, optimizer state, saved activations and batch: `layerlab.training.memory`) per cell."""
    if budget is None or len(group) == 1:
        return [group]
    first = group[0]
    per_cell = stage_memory(first.stage, *first_batch(first.loop.cell.run.batch_size, first.loop.data.train.x,
                                                      first.loop.data.train.y)).total
    size = max(1, budget // per_cell)
    if size < len(group):
        log.info("a step of %s holds %.1f MB: fused groups of %d cells fit the device's %.0f MB", first.name,
                 per_cell / 1e6, size, budget / 1e6)
    return [group[i:i + size] for i in range(0, len(group), size)]


class Group:
    """Cells stepping in lockstep as one fused network (a group of one is a fused network of one)."""

    def __init__(self, members: list[Member]):
        self.members = members
        self.build(members)

    def build(self, members: list[Member]) -> None:
        """The fused network and optimizer of `members` (their parameters and optimizer state become views)."""
        self.active = members
        self.rng = ModelRNG([m.rng for m in members])
        try:
            self.net = fuse([m.model for m in members], self.rng)
        except NotFusable as err:  # the groups were formed by shapes: a module without a fused counterpart
            raise RuntimeError(f"cells {', '.join(m.name for m in members)} cannot fuse: {err}") from err
        self.net.train()
        named = [dict(m.model.named_parameters()) for m in members]
        optimizers = [m.stage.optimizer for m in members]
        self.params = [FusedParam.of_leaf(p, [n[name] for n in named], optimizers)
                       for name, p in self.net.named_parameters()]
        self.params += objective_params([m.loop.objective for m in members], optimizers)
        self.optimizer = FusedOptimizer(self.params)

    def own(self, k: int) -> AbstractContextManager:
        """Run member k's own code with its RNG stream."""
        return self.rng.model(k)

    def train(self) -> list[Member]:
        members = self.members
        log.info("fused %d cells (%s) from step %d", len(members), ", ".join(m.name for m in members),
                 members[0].start)
        for k, m in enumerate(members):
            with self.own(k):
                m.loop.begin_stage(m.stage)
        t, tic = members[0].start, time.perf_counter()
        while self.active:
            self.checkpoint(t)
            leaving = self.step(t)
            now = time.perf_counter()
            for m in self.active:
                m.seconds += (now - tic) / len(self.active)
            tic = now
            if leaving:
                self.leave(leaving)
            t += 1
        return members

    def checkpoint(self, t: int) -> None:
        """Each member's checkpoint when due (all of them before stopping for a signal)."""
        stop = None
        for k, m in enumerate(self.active):
            if m.checkpoint is not None and t > m.start and m.checkpoint.due(m.stage.offset + t):
                with self.own(k):
                    state = m.loop.state(m.stage, t)
                try:
                    m.checkpoint.save(state)
                except Interrupted as err:
                    stop = err
        if stop is not None:
            raise stop

    def step(self, t: int) -> list[Member]:
        """Step t of every active member: one fused forward; each member's records, evaluation, end; one fused
        update of those that go on. Returns the members that leave (their last step, or diverged)."""
        batches = [m.loop.batch(m.stage, t) for m in self.active]
        logits, hidden = self.net(torch.cat([x for x, _ in batches]))
        n = len(self.active)
        logits, hidden = logits.chunk(n), [h.chunk(n) for h in hidden]
        states, leaving = [], []
        for k, (m, (x, y)) in enumerate(zip(self.active, batches, strict=True)):
            with self.own(k):
                state = m.loop.record(m.stage, t, x, y, logits[k], [h[k] for h in hidden])
                ends = m.loop.conclude(m.stage, state) if t == m.stage.steps else m.loop.observe(m.stage, state)
            states.append(state)
            if ends or t == m.stage.steps:
                leaving.append(m)
        going = [(k, s) for k, (m, s) in enumerate(zip(self.active, states, strict=True)) if m not in leaving]
        if going:
            self.update(going, leaving)
        return leaving

    def update(self, going: list[tuple[int, StepState]], leaving: list[Member]) -> None:
        """The unfused update (`Loop.update`) of the members that go on, as one fused backward and step."""
        self.optimizer.zero_grad()  # each model's gradients, as its own optimizer.zero_grad(set_to_none=True)
        torch.stack([state.loss for _, state in going]).sum().backward()
        for param in self.params:
            param.share_grad([k for k, _ in going])
        self.hooks(going, "after_backward")
        separate(leaving)  # they keep their weights and optimizer state as of now
        self.optimizer.step()
        for m in self.active:
            # stepped through the fused step: the LR schedule checks this flag, which torch sets undeclared
            m.stage.optimizer._opt_called = True  # type: ignore[attr-defined]
        self.hooks(going, "after_update")
        for k, _ in going:
            self.active[k].stage.schedule.step()

    def hooks(self, going: list[tuple[int, StepState]], name: str) -> None:
        for k, state in going:
            with self.own(k):
                self.active[k].loop.hooks(name, state)

    def leave(self, leaving: list[Member]) -> None:
        """Members done training take their RNG streams along; the others are fused anew without them."""
        for k, m in enumerate(self.active):
            m.rng = self.rng.states[k]
        staying = [m for m in self.active if m not in leaving]
        separate(staying)
        if staying:
            self.build(staying)
        else:
            self.active = []


def objective_params(objectives: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> list[FusedParam]:
    """The objectives' own parameters (LBE's alpha), fused across the members that have one of the same shape."""
    positions: dict[tuple, list[int]] = {}
    for k, objective in enumerate(objectives):
        for i, p in enumerate(objective.parameters()):
            positions.setdefault((i, tuple(p.shape)), []).append(k)
    return [FusedParam.stack([list(objectives[k].parameters())[i] for k in ks], [optimizers[k] for k in ks])
            for (i, _), ks in positions.items()]


def separate(members: list[Member]) -> None:
    """The members' networks, objectives and optimizer states in storage of their own (no longer fused)."""
    unfuse([module for m in members for module in (m.model, m.loop.objective)])
    own_state([m.stage.optimizer for m in members])
