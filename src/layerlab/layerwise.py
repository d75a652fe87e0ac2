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

Metrics (train.zarr): one global step counter over all stages (stage i's local step t is i * layer_steps + t);
the step and eval-step curves describe the network of the current stage; `layer_test_acc` is the test accuracy
of each stage's head, indexed by the top layer of its window, and the peak layer its argmax (the thesis's choice,
a model selection on the test set: reported beside the final, last-layer accuracy `test_acc`). Peak memory of
one training step per stage (layerlab.probes.memory); the cell's peak is the maximum over stages.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from layerlab.data import Dataset
from layerlab.models import LayerwiseNet, init_weights
from layerlab.probes.memory import PARTS, StepMemory, as_arrays, step_memory
from layerlab.store import describe
from layerlab.train import DESCRIPTIONS as TRAIN_DESCRIPTIONS
from layerlab.train import Log, batches, evaluate, logged_steps, make_optimizer, run_variables

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


class Stage(nn.Module):
    """The network of one stage: frozen feednet layers [0, start), trained layers [start, stop), a head.

    `forward(x, noise)` returns `(logits, hidden of the trained layers)`, like LayerwiseNet, so the training
    helpers (`evaluate`) apply. The feednet stays in eval mode whatever `train()` is asked."""

    def __init__(self, model: LayerwiseNet, start: int, stop: int, head: nn.Module):
        super().__init__()
        self.frozen = nn.ModuleList(model.layers[:start])
        self.frozen_acts = nn.ModuleList(model.acts[:start])
        self.trained = nn.ModuleList(model.layers[start:stop])
        self.acts = nn.ModuleList(model.acts[start:stop])
        self.head = head
        self.flatten_input = model.flatten_input

    def train(self, mode: bool = True) -> Stage:
        super().train(mode)
        self.frozen.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1) if self.flatten_input else x
        for layer, act in zip(self.frozen, self.frozen_acts, strict=True):
            h = act(layer(h))
        return h

    def forward(self, x: torch.Tensor, noise: Noise | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.features(x)
        if noise:
            h = dropout(h, noise.p_input, noise.generator)
        hidden = []
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


def stage_schedule(cell: dict, stage: int) -> dict:
    """The cell with stage `stage`'s learning rate and weight decay (lr x decay^i, wd x growth^i)."""
    return {**cell, "lr": cell["lr"] * cell["layer_lr_decay"] ** stage,
            "weight_decay": cell["weight_decay"] * cell["layer_wd_growth"] ** stage}


def make_head(cell: dict, shape: tuple[int, ...], n_classes: int, stage: int) -> nn.Module:
    """A fresh decision head for features of `shape` (one example): `linear` (flatten + Linear) or
    `pool_linear` (global average pool of conv maps, then Linear; plain Linear for vectors)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cell["seed"] * STAGE_SEED + stage)
        if cell["layer_head"] == "pool_linear" and len(shape) == 3:
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], n_classes))
        else:
            head = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), n_classes))
        init_weights(head, cell["init"], cell["sigma_w2"], cell["sigma_b2"])
    return head


def ce_step_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
    return F.cross_entropy(net(x, noise)[0] if noise else net(x)[0], y)


def first_batch(cell: dict, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the training batch size (own storage) for the memory measurement: only shapes matter."""
    n = min(cell["batch_size"], len(data.train.y))
    return data.train.x[:n].clone(), data.train.y[:n].clone()


def stage_network(cell: dict, model: LayerwiseNet, i: int, window: tuple[int, int], last: bool, n_classes: int,
                  x: torch.Tensor) -> Stage:
    """Stage i's network on `window`: a fresh head (the model's own output layer for the last stage); only the
    window's and the head's parameters require gradients (call with all of `model`'s parameters frozen)."""
    start, stop = window
    with torch.no_grad():  # the shape of one example at the window's output
        shape = Stage(model, 0, stop, nn.Identity()).eval()(x[:1])[0].shape[1:]
    head = model.head if last else make_head(cell, tuple(shape), n_classes, i).to(x.device)
    stage = Stage(model, start, stop, head).train()  # window and head in training mode, feednet in eval mode
    for p in [*stage.trained.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    return stage


def stage_memory(cell: dict, stage: Stage, i: int, x: torch.Tensor, y: torch.Tensor) -> StepMemory:
    """Memory of one training step of stage i (its dropouts and optimizer included)."""
    noise = Noise(cell["input_dropout"], cell["grad_dropout"], torch.Generator(device=x.device))
    return step_memory(stage, lambda net, a, b: ce_step_loss(net, a, b, noise),
                       lambda params: make_optimizer(stage_schedule(cell, i), params), x, y)


def memory_profile(cell: dict, model: LayerwiseNet, x: torch.Tensor, y: torch.Tensor,
                   n_classes: int) -> tuple[StepMemory, list[StepMemory]]:
    """(backprop step, every stage's step) of the cell's regime on the batch (x, y), without training: the
    seed notes' E6b (relative memory from random tensors). `model` is left as it was."""
    backprop = step_memory(model, ce_step_loss, lambda params: make_optimizer(cell, params), x, y)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    stages = windows(len(model.layers), 1 if cell["training"] == "layerwise" else cell["segment_size"])
    memories = []
    for i, window in enumerate(stages):
        stage = stage_network(cell, model, i, window, i == len(stages) - 1, n_classes, x)
        memories.append(stage_memory(cell, stage, i, x, y))
        stage.requires_grad_(False)
    for p, flag in zip(model.parameters(), flags, strict=True):
        p.requires_grad_(flag)
    return backprop, memories


def backprop_memory(cell: dict, model: nn.Module, data: Dataset) -> dict[str, xr.DataArray]:
    """Peak memory of one full-model backprop step (the store variables of a backprop cell)."""
    memory = step_memory(model, ce_step_loss, lambda params: make_optimizer(cell, params), *first_batch(cell, data))
    return memory_variables([memory])


def memory_variables(memories: list[StepMemory], layers: list[int] | None = None,
                     n_layers: int = 0) -> dict[str, xr.DataArray]:
    """Cell-level peak (max over stages) with its parts, and per-layer peaks when `layers` (a stage's top layer)."""
    arrays = as_arrays(memories)
    peak = int(np.argmax(arrays["tracked"]))
    out = {"peak_memory_bytes": xr.DataArray(arrays["tracked"][peak]),
           "cuda_peak_memory_bytes": xr.DataArray(np.nanmax(arrays["cuda"]) if np.isfinite(arrays["cuda"]).any()
                                                  else np.nan),
           "peak_memory_parts": xr.DataArray(arrays["parts"][peak], dims="memory_part",
                                             coords={"memory_part": np.array(PARTS, dtype=object)})}
    if layers is not None:
        for name, values in (("layer_peak_memory_bytes", arrays["tracked"]),
                             ("layer_cuda_peak_memory_bytes", arrays["cuda"])):
            per_layer = np.full(n_layers, np.nan)
            per_layer[layers] = values
            out[name] = xr.DataArray(per_layer, dims="layer")
    for name, da in out.items():
        da.attrs.update(long_name=DESCRIPTIONS[name][0], units=DESCRIPTIONS[name][1])
    return out


def train_layerwise(cell: dict, data: Dataset, model: LayerwiseNet,
                    device: torch.device) -> tuple[xr.Dataset, LayerwiseNet]:
    """Train `model` stage by stage as `cell` says; return the per-cell metrics Dataset and the trained model."""
    model = model.to(device)
    n_layers = len(model.layers)
    k = 1 if cell["training"] == "layerwise" else cell["segment_size"]
    stages = windows(n_layers, k)
    steps = cell["layer_steps"] or cell["steps"]
    to_log, to_eval = logged_steps(steps, cell["log_every"]), logged_steps(steps, cell["eval_every"])
    generator = torch.Generator().manual_seed(cell["seed"])
    noise_generator = torch.Generator(device=device).manual_seed(cell["seed"])
    stream = batches(len(data.train.y), cell["batch_size"], generator)
    epoch_steps = max(1, len(data.train.y) // min(cell["batch_size"], len(data.train.y)))
    x0, y0 = first_batch(cell, data)
    log, stage_of_step = Log(), []
    per_layer = {name: np.full(n_layers, np.nan) for name in ("layer_test_acc", "layer_test_loss", "layer_lr",
                                                              "layer_weight_decay")}
    memories, diverged_step, seconds = [], -1, 0.0
    for p in model.parameters():
        p.requires_grad_(False)
    for i, (start, stop) in enumerate(stages):
        last = i == len(stages) - 1
        stage = stage_network(cell, model, i, (start, stop), last, data.n_classes, x0)
        trainable = [p for p in stage.parameters() if p.requires_grad]
        stage_cell = stage_schedule(cell, i)
        top = stop - 1
        per_layer["layer_lr"][top], per_layer["layer_weight_decay"][top] = stage_cell["lr"], stage_cell["weight_decay"]
        memories.append(stage_memory(cell, stage, i, x0, y0))
        optimizer = make_optimizer(stage_cell, trainable)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, cell["lr_milestones"], gamma=0.1)
        stage.train()
        tic = time.perf_counter()
        for t in range(steps + 1):
            step = i * steps + t
            if t in to_eval and (t > 0 or i == 0):
                test_acc, test_loss = evaluate(stage, data.test)
                log.eval_steps.append(step)
                log.add(log.evals, test_acc=test_acc, test_loss=test_loss)
                if t == steps:
                    per_layer["layer_test_acc"][top], per_layer["layer_test_loss"][top] = test_acc, test_loss
            if t == steps and not last:
                break
            idx = next(stream).to(device)
            x, y = data.train.x[idx], data.train.y[idx]
            noise = Noise(cell["input_dropout"] * cell["input_dropout_decay"] ** (t // epoch_steps),
                          cell["grad_dropout"], noise_generator)
            logits, _ = stage(x, noise)
            loss = F.cross_entropy(logits, y)
            finite = bool(torch.isfinite(loss))
            if (t in to_log and (t < steps or last)) or not finite:
                log.steps.append(step)
                stage_of_step.append(i)
                log.add(log.scalars, loss=loss, ce=loss, batch_acc=(logits.argmax(1) == y).float().mean())
            if not finite:
                diverged_step = step
                if step not in log.eval_steps:
                    test_acc, test_loss = evaluate(stage, data.test)
                    log.eval_steps.append(step)
                    log.add(log.evals, test_acc=test_acc, test_loss=test_loss)
                break
            if t == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        seconds += time.perf_counter() - tic
        for p in trainable:
            p.requires_grad_(False)
        if diverged_step >= 0:
            break
    tic = time.perf_counter()
    train_acc, train_loss = evaluate(stage, data.train)
    seconds += time.perf_counter() - tic
    for p in model.parameters():
        p.requires_grad_(True)
    tops = [stop - 1 for _, stop in stages[: len(memories)]]
    ds = to_dataset(log, stage_of_step, per_layer, diverged_step, train_acc, train_loss, seconds)
    return describe(ds.assign(memory_variables(memories, tops, n_layers)), DESCRIPTIONS), model


def to_dataset(log: Log, stage_of_step: list[int], per_layer: dict[str, np.ndarray], diverged_step: int,
               train_acc: float, train_loss: float, seconds: float) -> xr.Dataset:
    acc = per_layer["layer_test_acc"]
    peak = int(np.nanargmax(acc)) if np.isfinite(acc).any() else -1
    return xr.Dataset(
        {
            **run_variables(log, diverged_step, train_acc, train_loss, seconds),
            "stage": ("step", np.asarray(stage_of_step, dtype=np.int64)),
            **{k: ("layer", v.astype(np.float32 if "test" in k else np.float64)) for k, v in per_layer.items()},
            "peak_layer": float(peak) if peak >= 0 else np.nan,  # float: NaN-able in the study store
            "peak_test_acc": float(acc[peak]) if peak >= 0 else np.nan,
        },
        coords={"step": np.asarray(log.steps), "eval_step": np.asarray(log.eval_steps),
                "layer": np.arange(len(acc))},
    )


DESCRIPTIONS = {
    **TRAIN_DESCRIPTIONS,  # the final metrics, and what this loop means by the per-step ones:
    "loss": ("training loss of the current stage's network on the mini-batch (CE)", "nat"),
    "ce": ("cross-entropy of the current stage's network on the mini-batch", "nat"),
    "batch_acc": ("accuracy of the current stage's network on the training mini-batch", "1"),
    "stage": ("layer-wise stage (window index) trained at this step", "1"),
    "test_acc_curve": ("test accuracy of the current stage's network (layer-wise) or the model", "1"),
    "test_loss_curve": ("test cross-entropy of the current stage's network (layer-wise) or the model", "nat"),
    "layer_test_acc": ("test accuracy of the decision head on this layer after its stage (layer-wise)", "1"),
    "layer_test_loss": ("test cross-entropy of the decision head on this layer after its stage", "nat"),
    "layer_lr": ("learning rate of the stage whose window ends at this layer", "1"),
    "layer_weight_decay": ("weight decay of the stage whose window ends at this layer", "1"),
    "peak_layer": ("layer (0-based) whose head has the highest test accuracy (NaN: none)", "1"),
    "peak_test_acc": ("highest per-layer head test accuracy (selected on the test set, as the thesis)", "1"),
    "peak_memory_bytes": ("peak memory of one training step (tracked: saved activations + parameters + gradients "
                          "+ optimizer state + batch; layer-wise: max over stages)", "B"),
    "cuda_peak_memory_bytes": ("CUDA allocator peak of one training step above the resident data (NaN off CUDA)",
                               "B"),
    "peak_memory_parts": ("parts of the tracked peak memory", "B"),
    "layer_peak_memory_bytes": ("tracked peak memory of one step of the stage whose window ends at this layer", "B"),
    "layer_cuda_peak_memory_bytes": ("CUDA allocator peak of one step of the stage ending at this layer", "B"),
}
