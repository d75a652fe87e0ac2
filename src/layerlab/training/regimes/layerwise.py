"""Deep layer-wise (DLL) and segment-wise (DSL) training, paper 001 (Øland's thesis) Ch. 6, Algorithm 3.

Stages run bottom-up over sliding windows of `segment_size` = k consecutive hidden layers with overlap k - 1
(layer-wise: k = 1): stage i trains layers i .. i+k-1 together with a decision head on the output of layer i+k-1,
against the true labels, with ordinary backprop inside the stage. The layers below the window (the "feednet")
are frozen: no gradients, no optimizer state, eval mode (BatchNorm running statistics and Dropout frozen), and
their features are recomputed per batch under `no_grad` (nothing of them is kept for backward). Every head but
the last is a fresh one (`layer_head`) and is discarded; the last stage's head is the network's own output
layer, so the final network is the architecture the cell names (Algorithm 3: W_k := W~).

Per stage i (counted from 0): `layer_steps` updates (default `steps`), lr x `layer_lr_decay`^i and weight decay
x `layer_wd_growth`^i (thesis Table 6.3: 0.8^i and 1.15^i), a fresh optimizer of the cell's kind. The thesis's
forward and backward dropout (Sec. 6.6.3): inverted elementwise dropout with p = `input_dropout` x
`input_dropout_decay`^epoch on the (frozen) input of the window, epoch counted within the stage; and inverted
elementwise dropout with fixed p = `grad_dropout` on the *gradient* dL/dh flowing from the head into the window
(the forward pass is untouched).

The regime supplies the stages of the one training loop (`layerlab.training.loop`), so every training probe that
supports it runs here too. Metrics (train.zarr): one global step counter over all stages (stage i's local step t is
i * layer_steps + t);
the step and eval-step curves describe the network of the current stage; `layer_test_acc` is the test accuracy
of each stage's head, indexed by the top layer of its window, and the peak layer its argmax (the thesis's choice,
a model selection on the test set: reported beside the final, last-layer accuracy `test_acc`). Peak memory of
one training step per stage (layerlab.probes.memory); the cell's peak is the maximum over stages.

Partition-wise training (DPL, Sec. 6.8): consecutive windows of `segment_size` layers without overlap; the upper
partitions may train on a selection of each batch (`layerlab.training.batch_filters`: loss filtering by the first
partition's loss, online k-filtering by the partition's own inputs).

Heads (`layer_head`, plug-ins of layerlab.core.registry.DECISION_HEADS; layerlab.nets.decision); with
`memory_target` they are fitted to a share of backprop's memory before training (`layerlab.training.head_search`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import xarray as xr
from torch import nn

from layerlab.core.cell import Cell
from layerlab.core.params import as_dict
from layerlab.core.sections import OptimizerParams
from layerlab.data.datasets import Dataset
from layerlab.nets.decision import head_config
from layerlab.nets.layers import LayerStack
from layerlab.training.batch_filters import KFilter, LossFilter, chain
from layerlab.training.head_search import HeadFit, fit_heads
from layerlab.training.memory import LossFn, first_batch, storage_bytes
from layerlab.training.optim import make_optimizer
from layerlab.training.records import Run
from layerlab.training.regime import Regime
from layerlab.training.regimes.stage_nets import (
    Noise,
    StageNet,
    noisy_step_loss,
    stage_network,
    stage_schedule,
    window_list,
)
from layerlab.training.stage import Stage

log = logging.getLogger("layerlab.training.regimes.layerwise")


class LayerRegime(Regime):
    """What the staged regimes share (layer-wise, segment-wise, round robin): one layer-wise network per stage,
    `layer_steps` updates each, the per-layer results, the seeded stream of the thesis's dropout masks."""

    def __init__(self, cell: Cell, data: Dataset, model: LayerStack, extra: list[nn.Parameter]):
        super().__init__(cell, data, model, extra)
        self.model: LayerStack = model
        self.steps = cell.regime.layer_steps or cell.run.steps
        self.results = {name: np.full(len(model.layers), np.nan) for name in (
            "layer_test_acc", "layer_test_loss", "layer_lr", "layer_weight_decay", "layer_decision_convs",
            "layer_decision_channels", "layer_k_kept")}
        self.fit: HeadFit | None = None  # heads fitted to memory_target (Staged)
        self.noise_generator = torch.Generator(device=data.train.x.device).manual_seed(cell.run.seed)
        n = len(data.train.y)
        self.epoch_steps = max(1, n // min(cell.run.batch_size, n))

    def noise(self, t: int) -> Noise:
        """Forward dropout decayed per epoch of the trained layer's updates `t`, backward dropout fixed."""
        regime = self.cell.regime
        return Noise(regime.input_dropout * regime.input_dropout_decay ** (t // self.epoch_steps),
                     regime.grad_dropout, self.noise_generator)

    @staticmethod
    def layer(stage: Stage) -> int:
        """The layer whose results `stage` reports (every staged stage has one)."""
        assert stage.top is not None
        return stage.top

    def schedule(self, i: int) -> OptimizerParams:
        """Stage i's optimizer: lr x decay^i, weight decay x growth^i."""
        return stage_schedule(self.cell.optimizer, self.cell.regime, i)

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return first_batch(self.cell.run.batch_size, self.data.train.x, self.data.train.y)

    def forward(self, net: StageNet, before: int, x: torch.Tensor, t: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Step t of a stage whose layer had `before` updates in earlier stages."""
        return net(x, self.noise(before + t))

    def make_stage(self, index: int, i: int, net: StageNet, optimizer: torch.optim.Optimizer,
                   schedule: torch.optim.lr_scheduler.LRScheduler, top: int, last: bool, before: int = 0,
                   **options) -> Stage:
        """Stage `index` (global steps from index x layer_steps) training `net` with stage i's schedule; `top`:
        the layer its results go to. Records the schedule's lr and weight decay at `top`."""
        stage_optimizer = self.schedule(i)
        self.results["layer_lr"][top] = stage_optimizer.lr
        self.results["layer_weight_decay"][top] = stage_optimizer.weight_decay
        if net.head is not self.model.head:  # a decision head: its down-convs and channels
            self.results["layer_decision_convs"][top], self.results["layer_decision_channels"][top] = (
                head_config(net.head))
        trainable = [p for p in net.parameters() if p.requires_grad]
        return Stage(regime=self, index=index, offset=index * self.steps, steps=self.steps, last=last, net=net,
                     trainable=trainable, optimizer=optimizer, schedule=schedule,
                     forward=partial(self.forward, net, before), top=top, **options)

    def step_loss(self, stage: Stage) -> LossFn:
        return noisy_step_loss(self.cell.regime, self.device)

    def step_optimizer(self, stage: Stage) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
        return partial(make_optimizer, self.schedule(self.schedule_index(stage)))

    def schedule_index(self, stage: Stage) -> int:
        """The i of stage `stage`'s lr x decay^i and wd x growth^i: its top layer's window."""
        return stage.index

    @property
    def device(self) -> torch.device:
        return self.data.train.x.device

    def optimizer(self, i: int, net: StageNet) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Stage i's optimizer (lr x decay^i, wd x growth^i) over the trainable parameters of `net`, and its
        schedule (x0.1 at each of `lr_milestones`, counted in the stage's own updates)."""
        optimizer = make_optimizer(self.schedule(i), [p for p in net.parameters() if p.requires_grad])
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, self.cell.optimizer.lr_milestones, gamma=0.1)

    def state_dict(self) -> dict:
        return {"results": self.results, "noise": self.noise_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.results = state["results"]
        self.noise_generator.set_state(state["noise"])

    def end_stage(self, stage: Stage, test_acc: float, test_loss: float) -> None:
        self.results["layer_test_acc"][stage.top] = test_acc
        self.results["layer_test_loss"][stage.top] = test_loss

    def variables(self, run: Run) -> xr.Dataset:
        acc = self.results["layer_test_acc"]
        peak = int(np.nanargmax(acc)) if np.isfinite(acc).any() else -1
        return xr.Dataset(
            {
                "stage": ("step", np.asarray(run.stages, dtype=np.int64)),
                **{k: ("layer", v.astype(np.float32 if "test" in k else np.float64)) for k, v in self.results.items()},
                "peak_layer": float(peak) if peak >= 0 else np.nan,  # float: NaN-able in the study store
                "peak_test_acc": float(acc[peak]) if peak >= 0 else np.nan,
                "search_relative_memory": self.fit.relative_memory if self.fit else np.nan,
            },
            coords={"step": np.asarray(run.steps), "layer": np.arange(len(acc))},
        )


class Staged(LayerRegime):
    """Layer-wise (`windows` single), segment-wise (sliding) and partition-wise (partitions) training: one stage per
    window, bottom-up."""

    def __init__(self, cell: Cell, data: Dataset, model: LayerStack, extra: list[nn.Parameter], windows: str):
        super().__init__(cell, data, model, extra)
        self.windows = window_list(windows, len(model.layers), cell.regime.segment_size)
        self.n_stages = len(self.windows)
        self.filter: LossFilter | None = None
        self.k_filter: KFilter | None = None
        if cell.regime.memory_target is not None:  # the heads' search, before any training (shapes only)
            self.fit = fit_heads(cell, model, *self.first_batch(), data.n_classes)
            log.info("heads fitted to memory_target %g: %s; relative memory %.4f", cell.regime.memory_target,
                     ", ".join(f"stage {i}: {as_dict(head) if head else 'output layer'}"
                               for i, head in enumerate(self.fit.heads)),
                     self.fit.relative_memory)

    @property
    def total_steps(self) -> int:
        return self.n_stages * self.steps

    def network(self, i: int) -> StageNet:
        """Stage i's network, only its window and head requiring gradients."""
        cell, model = self.cell, self.model
        model.requires_grad_(False)
        head = self.fit.heads[i] if self.fit else None
        return stage_network(cell.replace(head) if head else cell, model, i, self.windows[i], i == self.n_stages - 1,
                             self.data.n_classes, self.first_batch()[0])

    def stage(self, index: int) -> Stage:
        cell, window = self.cell, self.windows[index]
        net = self.network(index)
        self.k_filter = (KFilter(cell.run, cell.regime.k_filter_cap, net, self.data.train, cell.regime.filter_from)
                         if index and cell.run.k_filter else None)
        return self.make_stage(index, index, net, *self.optimizer(index, net), top=window[1] - 1,
                               last=index == self.n_stages - 1, select=chain(self.k_filter, self.filter))

    def after_stage(self, stage: Stage) -> None:
        if self.k_filter is not None and self.k_filter.keep is not None:
            self.results["layer_k_kept"][stage.top] = float(self.k_filter.keep.float().mean())
        regime = self.cell.regime
        if stage.index == 0 and regime.loss_filter > 0:  # the first partition, with its head, filters the rest
            assert isinstance(stage.net, StageNet)
            self.filter = LossFilter(stage.net.eval(), regime.loss_filter, regime.filter_from)

    def resident(self, stage: Stage) -> dict[str, int]:
        return {"parameters": storage_bytes(self.filter.net.head.parameters())} if self.filter else {}

    def state_dict(self) -> dict:
        head = None if self.filter is None else self.filter.net.head.state_dict()
        return {**super().state_dict(), "filter_head": head}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["filter_head"] is not None:  # the first partition's network, its head as trained
            net = self.network(0)
            net.requires_grad_(False)
            self.filter = LossFilter(net.eval(), self.cell.regime.loss_filter, self.cell.regime.filter_from)
            self.filter.net.head.load_state_dict(state["filter_head"])
