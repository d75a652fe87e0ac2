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

The regime supplies the stages of the one training loop (`layerlab.train`), so every training probe that supports
it runs here too. Metrics (train.zarr): one global step counter over all stages (stage i's local step t is
i * layer_steps + t);
the step and eval-step curves describe the network of the current stage; `layer_test_acc` is the test accuracy
of each stage's head, indexed by the top layer of its window, and the peak layer its argmax (the thesis's choice,
a model selection on the test set: reported beside the final, last-layer accuracy `test_acc`). Peak memory of
one training step per stage (layerlab.probes.memory); the cell's peak is the maximum over stages.

Partition-wise training (DPL, Sec. 6.8): consecutive windows of `segment_size` layers without overlap; the upper
partitions may train on a selection of each batch (`layerlab.batch_filters`: loss filtering by the first
partition's loss, online k-filtering by the partition's own inputs).

Heads (`layer_head`, plug-ins of layerlab.registry.DECISION_HEADS; layerlab.decision). With `memory_target` the
regime fits every stage's head before training (`fit_heads`, the thesis's search of Table 6.3, whose procedure it
does not give): per stage, among the head's `search_space` (decision blocks: 0..decision_convs down-convs of
1..decision_channels channels), the one whose tracked memory of one step (`step_memory`'s accounting, on the
cell's first batch, extrapolated from two small dry steps, no training) is the closest to memory_target x
backprop's, of those at most memory_tolerance above it (found by bisection along each family of the space);
where none is, the smallest (the target is then missed, and the achieved relative memory says by how much). The
last stage keeps the model's output layer. Deterministic: shapes only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from layerlab.batch_filters import KFilter, LossFilter, chain
from layerlab.decision import head_config
from layerlab.layers import LayerStack
from layerlab.models import init_weights
from layerlab.optim import make_optimizer
from layerlab.probes.base import Stage
from layerlab.probes.memory import StepMemory, extrapolated_step_memory, first_batch, step_memory, storage_bytes
from layerlab.registry import DECISION_HEADS, resolve
from layerlab.train import Regime, Run, ce_step_loss

log = logging.getLogger("layerlab.layerwise")
STAGE_SEED = 7919  # head of stage i is initialised from seed * STAGE_SEED + i (independent of the global RNG)


class GradDropout(torch.autograd.Function):
    """Identity forward; backward multiplies dL/dh by an inverted-dropout mask (keep with 1 - p, scale 1/(1 - p))."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
        ctx.p, ctx.generator = p, generator
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return dropout(grad, ctx.p, ctx.generator), None, None


def dropout(h: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted elementwise dropout with its own generator (so the mask stream is seeded and reproducible)."""
    if p == 0:
        return h
    keep = torch.rand(h.shape, generator=generator, device=h.device, dtype=h.dtype) >= p
    return h * keep / (1 - p)


def grad_dropout(h: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return GradDropout.apply(h, p, generator) if p > 0 else h


@dataclass
class Noise:
    """The thesis's forward (input) and backward (gradient) dropout of one stage."""

    p_input: float
    p_grad: float
    generator: torch.Generator | None


class StageNet(nn.Module):
    """The network of one stage: frozen feednet layers [0, start), trained layers [start, stop), a head.

    `forward(x, noise)` returns `(logits, hidden)` like the model (the feednet's hidden outputs computed under
    `no_grad`), so evaluation and the probes apply. The feednet stays in eval mode whatever `train()` is asked."""

    def __init__(self, model: LayerStack, start: int, stop: int, head: nn.Module):
        super().__init__()
        self.frozen = nn.ModuleList(model.layers[:start])
        self.frozen_acts = nn.ModuleList(model.acts[:start])
        self.trained = nn.ModuleList(model.layers[start:stop])
        self.acts = nn.ModuleList(model.acts[start:stop])
        self.head = head
        self.flatten_input = model.flatten_input

    def train(self, mode: bool = True) -> StageNet:
        super().train(mode)
        self.frozen.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feednet's hidden outputs (the input itself, flattened or not, when there is no feednet)."""
        hidden = [x.flatten(1) if self.flatten_input else x]
        for layer, act in zip(self.frozen, self.frozen_acts, strict=True):
            hidden.append(act(layer(hidden[-1])))
        return hidden

    def forward(self, x: torch.Tensor, noise: Noise | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs, *hidden = self.features(x)
        h = hidden[-1] if hidden else inputs
        if noise:
            h = dropout(h, noise.p_input, noise.generator)
        for layer, act in zip(self.trained, self.acts, strict=True):
            h = act(layer(h))
            hidden.append(h)
        if noise:
            h = grad_dropout(h, noise.p_grad, noise.generator)
        return self.head(h), hidden


def windows(n_layers: int, k: int) -> list[tuple[int, int]]:
    """Sliding windows [start, stop) of k layers with overlap k - 1, bottom-up (layer-wise: k = 1)."""
    if not 1 <= k <= n_layers:
        raise ValueError(f"segment_size {k} must be between 1 and the number of hidden layers ({n_layers})")
    return [(i, i + k) for i in range(n_layers - k + 1)]


def partitions(n_layers: int, k: int) -> list[tuple[int, int]]:
    """Consecutive partitions [start, stop) of k layers without overlap, bottom-up; the top one may be shorter
    (partition-wise training, DPL)."""
    if not 1 <= k <= n_layers:
        raise ValueError(f"segment_size {k} must be between 1 and the number of hidden layers ({n_layers})")
    return [(i, min(i + k, n_layers)) for i in range(0, n_layers, k)]


def stage_windows(cell: dict, n_layers: int) -> list[tuple[int, int]]:
    """The windows of the cell's staged regime: single layers, sliding windows or partitions."""
    if cell["training"] == "partitionwise":
        return partitions(n_layers, cell["segment_size"])
    return windows(n_layers, 1 if cell["training"] == "layerwise" else cell["segment_size"])


def stage_schedule(cell: dict, stage: int) -> dict:
    """The cell with stage `stage`'s learning rate and weight decay (lr x decay^i, wd x growth^i)."""
    return {**cell, "lr": cell["lr"] * cell["layer_lr_decay"] ** stage,
            "weight_decay": cell["weight_decay"] * cell["layer_wd_growth"] ** stage}


def make_head(cell: dict, shape: tuple[int, ...], n_classes: int, stage: int) -> nn.Module:
    """A fresh decision head `layer_head` for features of `shape` (one example), seeded per stage."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(cell["seed"] * STAGE_SEED + stage)
        head = resolve(DECISION_HEADS[cell["layer_head"]].build)(cell, shape, n_classes)
        init_weights(head, cell["init"], cell["sigma_w2"], cell["sigma_b2"])
    return head


@torch.no_grad()
def window_shape(model: LayerStack, stop: int, x: torch.Tensor) -> tuple[int, ...]:
    """The shape of one example at the output of layer `stop - 1`."""
    return tuple(StageNet(model, 0, stop, nn.Identity()).eval()(x[:1])[0].shape[1:])


def stage_network(cell: dict, model: LayerStack, i: int, window: tuple[int, int], last: bool, n_classes: int,
                  x: torch.Tensor) -> StageNet:
    """Stage i's network on `window`: a fresh head (the model's own output layer for the last stage); only the
    window's and the head's parameters require gradients (call with all of `model`'s parameters frozen)."""
    start, stop = window
    head = model.head if last else make_head(cell, window_shape(model, stop, x), n_classes, i).to(x.device)
    stage = StageNet(model, start, stop, head).train()  # window and head in training mode, feednet in eval mode
    for p in [*stage.trained.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    return stage


def memory_loss(cell: dict, device: torch.device) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of one training step of a stage network with the stage's dropouts (for `step_memory`)."""
    noise = Noise(cell["input_dropout"], cell["grad_dropout"], torch.Generator(device=device))
    return lambda net, x, y: F.cross_entropy(net(x, noise)[0], y)


def stage_memory(cell: dict, stage: StageNet, i: int, x: torch.Tensor, y: torch.Tensor,
                 measure: Callable[..., StepMemory] = step_memory) -> StepMemory:
    """Memory of one training step of stage i (its dropouts and optimizer included)."""
    return measure(stage, memory_loss(cell, x.device), partial(make_optimizer, stage_schedule(cell, i)), x, y)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """`model` with no parameter requiring gradients; the flags and the train/eval modes (stage networks set them)
    restored afterwards."""
    flags, modes = [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode


def measure_stage(cell: dict, model: LayerStack, i: int, window: tuple[int, int], last: bool, n_classes: int,
                  x: torch.Tensor, y: torch.Tensor, measure: Callable[..., StepMemory] = step_memory) -> StepMemory:
    """Memory of one step of stage i's network (call with `model` frozen)."""
    stage = stage_network(cell, model, i, window, last, n_classes, x)
    memory = stage_memory(cell, stage, i, x, y, measure)
    stage.requires_grad_(False)
    return memory


def memory_profile(cell: dict, model: LayerStack, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                   heads: list[dict] | None = None) -> tuple[StepMemory, list[StepMemory]]:
    """(backprop step, every stage's step) of the cell's regime on the batch (x, y), without training: the
    seed notes' E6b (relative memory from random tensors); `heads`: per stage, cell overrides of its head (as
    `fit_heads` chooses). `model` is left as it was."""
    backprop = step_memory(model, ce_step_loss, partial(make_optimizer, cell), x, y)
    stages = stage_windows(cell, len(model.layers))
    heads = heads or [{}] * len(stages)
    with frozen(model):
        memories = [measure_stage({**cell, **head}, model, i, window, i == len(stages) - 1, n_classes, x, y)
                    for i, (window, head) in enumerate(zip(stages, heads, strict=True))]
    return backprop, memories


@dataclass(frozen=True)
class HeadFit:
    """The memory search's result: per stage the chosen head (cell overrides; {} for the last stage, the model's
    own output layer) and the tracked memory of one step with it; the backprop step's memory."""

    heads: list[dict]
    memories: list[StepMemory]
    backprop: StepMemory

    @property
    def relative_memory(self) -> float:
        return max(m.total for m in self.memories) / self.backprop.total


def last_within(n: int, cost: Callable[[int], int], budget: float) -> int | None:
    """The largest j < n with cost(j) <= budget, for cost non-decreasing in j (bisection); None if cost(0) is over."""
    if cost(0) > budget:
        return None
    low, high = 0, n - 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= budget else (low, mid - 1)
    return low


def fit_stage(cell: dict, model: LayerStack, i: int, window: tuple[int, int], last: bool, n_classes: int,
              x: torch.Tensor, y: torch.Tensor, families: list[list[dict]], target: float,
              tolerance: float) -> tuple[dict, StepMemory]:
    """Stage i's head among `families` and its memory: of the configurations within `target + tolerance` bytes the
    one closest to `target` (per family: the last within the target and the one after it), else the smallest
    first one of a family; ties: the first family."""

    @cache
    def memory(f: int, j: int) -> StepMemory:
        return measure_stage({**cell, **families[f][j]}, model, i, window, last, n_classes, x, y,
                             extrapolated_step_memory)

    found = []
    for f, family in enumerate(families):
        j = last_within(len(family), lambda j, f=f: memory(f, j).total, target)
        found += [(f, k) for k in ([0] if j is None else [j, j + 1])
                  if k < len(family) and memory(f, k).total <= target + tolerance]
    f, j = (min(found, key=lambda fj: abs(memory(*fj).total - target)) if found
            else min(((f, 0) for f in range(len(families))), key=lambda fj: memory(*fj).total))
    return families[f][j], memory(f, j)


def fit_heads(cell: dict, model: LayerStack, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> HeadFit:
    """Per stage, the configuration of the cell's head whose tracked step memory on the batch (x, y) is the closest
    to memory_target x backprop's within memory_tolerance above it, else the smallest (module docstring). `model`
    is left as it was."""
    search_space = resolve(DECISION_HEADS[cell["layer_head"]].search_space)
    backprop = extrapolated_step_memory(model, ce_step_loss, partial(make_optimizer, cell), x, y)
    target, tolerance = cell["memory_target"] * backprop.total, cell["memory_tolerance"] * backprop.total
    stages = stage_windows(cell, len(model.layers))
    heads, memories = [], []
    with frozen(model):
        for i, window in enumerate(stages):
            last = i == len(stages) - 1
            families = [[{}]] if last else search_space(cell, window_shape(model, window[1], x))
            head, memory = fit_stage(cell, model, i, window, last, n_classes, x, y, families, target, tolerance)
            heads.append(head)
            memories.append(memory)
    return HeadFit(heads, memories, backprop)


class LayerRegime(Regime):
    """What the staged regimes share (layer-wise, segment-wise, round robin): one layer-wise network per stage,
    `layer_steps` updates each, the per-layer results, the seeded stream of the thesis's dropout masks."""

    def __init__(self, cell, data, model, extra):
        super().__init__(cell, data, model, extra)
        self.steps = cell["layer_steps"] or cell["steps"]
        self.results = {name: np.full(len(model.layers), np.nan) for name in (
            "layer_test_acc", "layer_test_loss", "layer_lr", "layer_weight_decay", "layer_decision_convs",
            "layer_decision_channels", "layer_k_kept")}
        self.fit: HeadFit | None = None  # heads fitted to memory_target (Staged)
        self.noise_generator = torch.Generator(device=data.train.x.device).manual_seed(cell["seed"])
        n = len(data.train.y)
        self.epoch_steps = max(1, n // min(cell["batch_size"], n))

    def noise(self, t: int) -> Noise:
        """Forward dropout decayed per epoch of the trained layer's updates `t`, backward dropout fixed."""
        cell = self.cell
        return Noise(cell["input_dropout"] * cell["input_dropout_decay"] ** (t // self.epoch_steps),
                     cell["grad_dropout"], self.noise_generator)

    def forward(self, net: StageNet, before: int, x: torch.Tensor, t: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Step t of a stage whose layer had `before` updates in earlier stages."""
        return net(x, self.noise(before + t))

    def stage(self, index: int, i: int, net: StageNet, optimizer: torch.optim.Optimizer,
              schedule: torch.optim.lr_scheduler.LRScheduler, top: int, last: bool, before: int = 0,
              **options) -> Stage:
        """Stage `index` (global steps from index x layer_steps) training `net` with stage i's schedule; `top`:
        the layer its results go to. Records the schedule's lr and weight decay at `top`."""
        stage_cell = stage_schedule(self.cell, i)
        self.results["layer_lr"][top] = stage_cell["lr"]
        self.results["layer_weight_decay"][top] = stage_cell["weight_decay"]
        if net.head is not self.model.head:  # a decision head: its down-convs and channels
            self.results["layer_decision_convs"][top], self.results["layer_decision_channels"][top] = (
                head_config(net.head))
        trainable = [p for p in net.parameters() if p.requires_grad]
        return Stage(index, index * self.steps, self.steps, index == 0, last, net, trainable, optimizer, schedule,
                     forward=partial(self.forward, net, before), memory_loss=memory_loss(self.cell, self.device),
                     memory_optimizer=partial(make_optimizer, stage_cell), top=top, **options)

    @property
    def device(self) -> torch.device:
        return self.data.train.x.device

    def optimizer(self, i: int, net: StageNet) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Stage i's optimizer (lr x decay^i, wd x growth^i) over the trainable parameters of `net`, and its
        schedule (x0.1 at each of `lr_milestones`, counted in the stage's own updates)."""
        optimizer = make_optimizer(stage_schedule(self.cell, i), [p for p in net.parameters() if p.requires_grad])
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, self.cell["lr_milestones"], gamma=0.1)

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
    """Layer-wise (segment_size 1), segment-wise and partition-wise training: one stage per window, bottom-up."""

    def __init__(self, cell, data, model, extra):
        super().__init__(cell, data, model, extra)
        self.windows = stage_windows(cell, len(model.layers))
        self.total_steps = len(self.windows) * self.steps
        self.filter: LossFilter | None = None
        if cell["memory_target"] is not None:  # the heads' search, before any training (shapes only)
            self.fit = fit_heads(cell, model, *first_batch(cell, data.train.x, data.train.y), data.n_classes)
            log.info("heads fitted to memory_target %g: %s; relative memory %.4f", cell["memory_target"],
                     ", ".join(f"stage {i}: {head or 'output layer'}" for i, head in enumerate(self.fit.heads)),
                     self.fit.relative_memory)

    def stages(self) -> Iterator[Stage]:
        cell, model = self.cell, self.model
        x0 = first_batch(cell, self.data.train.x, self.data.train.y)[0]
        model.requires_grad_(False)
        for i, window in enumerate(self.windows):
            last = i == len(self.windows) - 1
            head_cell = {**cell, **self.fit.heads[i]} if self.fit else cell
            net = stage_network(head_cell, model, i, window, last, self.data.n_classes, x0)
            held = {"parameters": storage_bytes(self.filter.net.head.parameters())} if self.filter else {}
            k_filter = KFilter(cell, net, self.data.train, cell["filter_from"]) if i and cell["k_filter"] else None
            yield self.stage(i, i, net, *self.optimizer(i, net), top=window[1] - 1, last=last,
                             select=chain(k_filter, self.filter), held=held)
            if k_filter is not None and k_filter.keep is not None:
                self.results["layer_k_kept"][window[1] - 1] = float(k_filter.keep.float().mean())
            if i == 0 and cell["loss_filter"] > 0:  # the first partition, with its head, filters the others' batches
                self.filter = LossFilter(net.eval(), cell["loss_filter"], cell["filter_from"])

    def state_dict(self) -> dict:
        head = None if self.filter is None else self.filter.net.head.state_dict()
        return {**super().state_dict(), "filter_head": head}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["filter_head"] is not None:
            self.filter.net.head.load_state_dict(state["filter_head"])
