"""Round-robin and random-robin layer-wise training, paper 001 (Øland's thesis) Ch. 6, Sec. 6.6.2, Algorithm 4.

One training state per hidden layer i, kept for the whole run: the layer, its decision head (a fresh `layer_head`,
the network's own output layer for the top layer, as in layer-wise training) and its own optimizer and LR schedule
(lr x `layer_lr_decay`^i, weight decay x `layer_wd_growth`^i). For round r = 0 .. `rounds` - 1 the layers are
trained in the order 0, 1, ..., L - 1 (`round_robin`) or in a seeded random permutation drawn afresh each round
(`random_robin`, the thesis's IsRandom = True), each for `layer_steps` updates with its head, against the true
labels. The layers below it form the feednet in their *current* state (the seed notes' [rec]): frozen for that
stage (no gradients, eval mode: BatchNorm statistics and Dropout frozen), recomputed per batch under `no_grad`.
So the upper layers keep seeing a changing input distribution (the thesis's forward regularization). With
`rounds` 1, `round_robin` is layer-wise training (the same stages, bit for bit).

Each (round, layer) is one stage of the one training loop (`layerlab.training.loop`): stage index r * L + position, its
global steps from index x `layer_steps`. A layer's LR milestones and its forward-dropout epochs count its own
updates over all rounds. The final network is the architecture the cell names; `test_acc`/`train_acc` are those
of the whole network even when the last stage (random robin) trains a lower layer (`Stage.final`).
`layer_test_acc` is each head's test accuracy at the end of its layer's last stage.

Memory: Algorithm 4 keeps the optimizer state of every layer ("extra memory for optimizers etc."). The tracked
peak of a stage is its step (as layer-wise: feednet, trained layer and head, their gradients and optimizer state,
saved activations, batch) plus what stays resident beside it (`Stage.held`): the layers above, every other
head, and every other layer's optimizer state at its size after an update (`optimizer_state_bytes`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import LayerStack
from layerlab.training.memory import optimizer_state_bytes, storage_bytes
from layerlab.training.optim import make_optimizer
from layerlab.training.records import Run
from layerlab.training.regimes.layerwise import LayerRegime
from layerlab.training.regimes.stage_nets import StageNet, stage_network
from layerlab.training.stage import Stage

ROBIN_SEED = 104729  # the layer orders of random robin come from the generator seeded (seed, ROBIN_SEED)


def layer_orders(n_layers: int, rounds: int, random: bool, seed: int) -> list[list[int]]:
    """The layer order of every round: bottom-up, or a fresh seeded permutation per round (random robin)."""
    rng = np.random.default_rng([seed, ROBIN_SEED])
    return [[int(i) for i in rng.permutation(n_layers)] if random else list(range(n_layers)) for _ in range(rounds)]


def resident_bytes(modules: list[nn.Module]) -> int:
    """Parameters and buffers of `modules` (distinct storages)."""
    return storage_bytes(t for m in modules for t in [*m.parameters(), *m.buffers()])


class Robin(LayerRegime):
    """Algorithm 4: `rounds` rounds over the layers (in order, or permuted per round), one persistent training
    state per layer."""

    def __init__(self, cell: Cell, data: Dataset, model: LayerStack, extra: list[nn.Parameter], random: bool):
        super().__init__(cell, data, model, extra)
        self.n = len(model.layers)
        self.orders = layer_orders(self.n, cell.regime.rounds, random, cell.run.seed)
        self.n_stages = cell.regime.rounds * self.n
        self.nets: list[StageNet] = []
        self.trainable: list[list[nn.Parameter]] = []
        self.optimizers: list[tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]] = []

    def build(self) -> None:
        """Every layer's training state: its stage network (feednet, layer, head), trainable parameters, optimizer
        and schedule; all frozen until their stage."""
        cell, model = self.cell, self.model
        x0 = self.first_batch()[0]
        model.requires_grad_(False)
        for i in range(self.n):
            net = stage_network(cell, model, i, (i, i + 1), i == self.n - 1, self.data.n_classes, x0)
            self.nets.append(net)
            self.trainable.append([p for p in net.parameters() if p.requires_grad])
            self.optimizers.append(self.optimizer(i, net))
            net.requires_grad_(False)

    @property
    def total_steps(self) -> int:
        return self.n_stages * self.steps

    def resident(self, stage: Stage) -> dict[str, int]:
        """Bytes resident beside layer i's stage: the layers above it, the other heads, the other optimizer states."""
        i = self.layer(stage)
        others = [j for j in range(self.n) if j != i]
        state = sum(optimizer_state_bytes(partial(make_optimizer, self.schedule(j)), self.trainable[j])
                    for j in others)
        return {"parameters": resident_bytes([*self.model.layers[i + 1:], *(self.nets[j].head for j in others)]),
                "optimizer_state": state}

    def schedule_index(self, stage: Stage) -> int:
        return self.layer(stage)

    def stage(self, index: int) -> Stage:
        if not self.nets:
            self.build()
        r, position = divmod(index, self.n)
        i = self.orders[r][position]
        for p in self.trainable[i]:
            p.requires_grad_(True)
        last = index == self.n_stages - 1
        return self.make_stage(index, i, self.nets[i], *self.optimizers[i], top=i, last=last, before=r * self.steps,
                               final=self.nets[-1] if last and i != self.n - 1 else None)

    def after_stage(self, stage: Stage) -> None:
        for p in self.trainable[self.layer(stage)]:  # its gradients are not kept until its next stage
            p.grad = None

    def state_dict(self) -> dict:
        return {**super().state_dict(), "heads": [net.head.state_dict() for net in self.nets[:-1]],
                "optimizers": [(opt.state_dict(), schedule.state_dict()) for opt, schedule in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if not self.nets:
            self.build()
        for net, head in zip(self.nets[:-1], state["heads"], strict=True):
            net.head.load_state_dict(head)
        for (opt, schedule), (opt_state, schedule_state) in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
            schedule.load_state_dict(schedule_state)

    def variables(self, run: Run) -> xr.Dataset:
        stages = np.asarray(run.stages, dtype=np.int64)
        orders = np.asarray(self.orders, dtype=np.int64)
        rounds = stages // self.n
        return super().variables(run).assign(
            robin_round=("step", rounds),
            robin_layer=("step", orders[rounds, stages % self.n]),
            robin_order=(("round", "order_position"), orders),
        )
