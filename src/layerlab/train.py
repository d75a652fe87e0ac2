"""Training loop of one ablation cell, with the in-training layer-wise probes.

The loop runs `steps` updates on mini-batches drawn from tensors on the device (seeded permutation per
epoch, last partial batch dropped). At every `log_every` steps (and the last) it records the loss terms,
the batch entropy of every hidden layer and BatchNorm's learnable gamma/beta vectors (if any); every
`eval_every` steps (and the last) the test accuracy. A non-finite loss ends the run early and marks the cell
`diverged`: a result, not a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from layerlab.augment import crop_flip
from layerlab.data import Dataset, Split
from layerlab.losses import LBELoss, output_loss, regularized
from layerlab.probes.batch_entropy import layer_entropies
from layerlab.probes.bn_params import learnable_parameters, trajectories
from layerlab.probes.curvature import curvature_dataset, measure, unfrozen_parameters
from layerlab.probes.grad_rms import WeightProbes
from layerlab.store import describe

EVAL_BATCH = 1000


def make_optimizer(cell: dict, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD or Adam; `weight_decay_params: weights` exempts biases, gamma, beta (every 0/1-d tensor) from L2."""
    groups: list[nn.Parameter] | list[dict] = params
    if cell["weight_decay_params"] == "weights":
        groups = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if cell["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=cell["lr"], momentum=cell["momentum"], weight_decay=cell["weight_decay"],
                               nesterov=cell["nesterov"])
    return torch.optim.Adam(groups, lr=cell["lr"], weight_decay=cell["weight_decay"])


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless index batches: a fresh seeded permutation each epoch, partial last batch dropped."""
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """(accuracy, mean cross-entropy); a row with non-finite logits counts as wrong."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(split.y), EVAL_BATCH):
        x, y = split.x[i : i + EVAL_BATCH], split.y[i : i + EVAL_BATCH]
        logits, _ = model(x)
        finite = torch.isfinite(logits).all(1)
        correct += int(((logits.argmax(1) == y) & finite).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train()
    return correct / len(split.y), loss / len(split.y)


@dataclass
class Log:
    """Per-step records, filled as training goes."""

    steps: list[int] = field(default_factory=list)
    scalars: dict[str, list[float]] = field(default_factory=dict)
    entropy: list[np.ndarray] = field(default_factory=list)
    alpha: list[np.ndarray] = field(default_factory=list)
    bn: list[dict[str, dict[int, np.ndarray]]] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    curvature_steps: list[int] = field(default_factory=list)
    curvature: list[list[dict[str, np.ndarray]]] = field(default_factory=list)
    curvature_seconds: float = 0.0
    weights: WeightProbes | None = None  # gradient RMS, weight entropy (paper 001)

    def add(self, store: dict[str, list[float]], **values: float | torch.Tensor) -> None:
        for k, v in values.items():
            store.setdefault(k, []).append(v.item() if isinstance(v, torch.Tensor) else float(v))


def logged_steps(steps: int, every: int) -> set[int]:
    return set(range(0, steps, every)) | {steps}


def train_cell(cell: dict, data: Dataset, model: nn.Module, device: torch.device) -> tuple[xr.Dataset, nn.Module]:
    """Train `model` as `cell` says; return the per-cell metrics Dataset and the trained model."""
    from layerlab.layerwise import backprop_memory, train_layerwise  # paper 001 ch. 6 (imports this module)
    if cell["training"] != "backprop":
        return train_layerwise(cell, data, model, device)
    model = model.to(device).train()
    memory = backprop_memory(cell, model, data)  # peak memory of one step, on a copy (layerlab.probes.memory)
    depth = len(model.layers)  # hidden layers (the paper-002 CNNs have a fixed depth)
    reg_layers = regularized(list(range(depth)), cell["lbe_layers"])
    lbe = None
    if cell["loss"] == "ce_lbe":
        lbe = LBELoss(len(reg_layers), cell["lbe_alpha"], cell["lbe_alpha_min"], cell["lbe_beta"],
                      cell["entropy_constant"]).to(device)
    params = unfrozen_parameters(model, cell["freeze_weights"]) + (list(lbe.parameters()) if lbe else [])
    optimizer = make_optimizer(cell, params)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, cell["lr_milestones"], gamma=0.1)
    generator = torch.Generator().manual_seed(cell["seed"])
    to_log, to_eval = logged_steps(cell["steps"], cell["log_every"]), logged_steps(cell["steps"], cell["eval_every"])
    log = Log(weights=WeightProbes(cell, model))
    to_curvature = logged_steps(cell["steps"], cell["curvature_every"]) if cell["curvature_every"] else set()
    probe_rows = torch.arange(min(cell["curvature_samples"], len(data.train.y)), device=device)
    curvature_generator = torch.Generator().manual_seed(cell["seed"])
    augment_generator = torch.Generator().manual_seed(cell["seed"])
    diverged_step = -1
    start = time.perf_counter()
    stream = batches(len(data.train.y), cell["batch_size"], generator)
    for step, idx in zip(range(cell["steps"] + 1), stream, strict=False):
        idx = idx.to(device)
        x, y = data.train.x[idx], data.train.y[idx]
        if cell["augment"] == "crop_flip":
            x = crop_flip(x, augment_generator)
        logits, hidden = model(x)
        ce = F.cross_entropy(logits, y)
        loss, lbe_value = (lbe(ce, regularized(hidden, cell["lbe_layers"])) if lbe
                           else (output_loss(cell, logits, y, ce), torch.tensor(np.nan)))
        finite = bool(torch.isfinite(loss))
        if step in to_log or not finite:
            log.steps.append(step)
            log.add(log.scalars, loss=loss, ce=ce, lbe=lbe_value,
                    batch_acc=(logits.argmax(1) == y).float().mean())
            with torch.no_grad():
                log.entropy.append(layer_entropies(hidden, cell["entropy_constant"]).cpu().numpy())
                alpha = np.full(depth, np.nan, dtype=np.float32)
                if lbe:
                    alpha[reg_layers] = lbe.target().detach().cpu().numpy()
                log.alpha.append(alpha)
            log.bn.append(learnable_parameters(model))
            log.weights.logged(step)
        if step in to_curvature and finite:  # paper 004: K-FAC factors of every layer's Fisher block
            tic = time.perf_counter()
            log.curvature.append(measure(model, data.train.x[probe_rows], data.train.y[probe_rows],
                                         cell["curvature_labels"], curvature_generator))
            log.curvature_steps.append(step)
            log.curvature_seconds += time.perf_counter() - tic
        if step in to_eval or not finite:
            test_acc, test_loss = evaluate(model, data.test)
            log.eval_steps.append(step)
            log.add(log.evals, test_acc=test_acc, test_loss=test_loss)
        if not finite:
            diverged_step = step
            break
        if step == cell["steps"]:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        log.weights.backward(step, step in to_log)
        optimizer.step()
        log.weights.updated(step)
        schedule.step()
    seconds = time.perf_counter() - start
    train_acc, train_loss = evaluate(model, data.train)
    ds = to_dataset(cell, log, diverged_step, train_acc, train_loss, seconds)
    return ds.assign(memory), model


def run_variables(log: Log, diverged_step: int, train_acc: float, train_loss: float, seconds: float) -> dict:
    """What every training loop stores: per-step scalars, evaluation curves and the final metrics."""
    test_acc = log.evals["test_acc"][-1]
    return {
        **{k: ("step", np.asarray(v, dtype=np.float32)) for k, v in log.scalars.items()},
        **{f"{k}_curve": ("eval_step", np.asarray(v, dtype=np.float32)) for k, v in log.evals.items()},
        "test_acc": test_acc,
        "test_error": 1 - test_acc,
        "test_loss": log.evals["test_loss"][-1],
        "test_acc_last3": float(np.mean(log.evals["test_acc"][-3:])),
        "train_acc": train_acc,
        "train_loss": train_loss,
        "diverged": diverged_step >= 0,
        "diverged_step": diverged_step,
        "train_seconds": seconds,
    }


def to_dataset(cell: dict, log: Log, diverged_step: int, train_acc: float, train_loss: float,
               seconds: float) -> xr.Dataset:
    layer = np.arange(len(log.entropy[0]))
    ds = xr.Dataset(
        {
            **run_variables(log, diverged_step, train_acc, train_loss, seconds),
            "batch_entropy": (("step", "layer"), np.stack(log.entropy).astype(np.float32)),
            "alpha": (("step", "layer"), np.stack(log.alpha).astype(np.float32)),
        },
        coords={"step": np.asarray(log.steps), "eval_step": np.asarray(log.eval_steps), "layer": layer},
    )
    ds = xr.merge([ds, trajectories(log.steps, log.bn)], join="outer", compat="no_conflicts",
                  combine_attrs="override")
    if log.weights is not None and (weights := log.weights.dataset(log.steps)) is not None:
        ds = xr.merge([ds, weights], join="outer", compat="no_conflicts", combine_attrs="override")
    if log.curvature:
        ds = xr.merge([ds, curvature_dataset(log.curvature_steps, log.curvature, log.curvature_seconds)],
                      join="outer", compat="no_conflicts", combine_attrs="override")
    return describe(ds, DESCRIPTIONS)


DESCRIPTIONS = {
    "loss": ("training loss on the mini-batch (CE, CE + CE*L_BE, or the output head's loss)", "nat"),
    "ce": ("cross-entropy on the mini-batch", "nat"),
    "lbe": ("batch-entropy loss L_BE (NaN without LBE)", "1"),
    "batch_acc": ("accuracy on the training mini-batch", "1"),
    "batch_entropy": ("batch entropy H^l of each hidden layer's activations", "nat"),
    "alpha": ("LBE target max(alpha_min, |alpha^l|) (NaN where not regularized)", "nat"),
    "gamma": ("BatchNorm scale gamma per channel (learnable only; NaN: padding)", "1"),
    "beta": ("BatchNorm shift beta per channel (learnable only; NaN: padding)", "1"),
    "gamma_activity": ("activity of gamma: mean over channels of |gamma - 1|", "1"),
    "beta_activity": ("activity of beta: mean over channels of |beta|", "1"),
    "test_acc_curve": ("test accuracy during training", "1"),
    "test_loss_curve": ("test cross-entropy during training", "nat"),
    "test_acc": ("final test accuracy", "1"),
    "test_error": ("final test error, 1 - test accuracy", "1"),
    "test_loss": ("final test cross-entropy", "nat"),
    "test_acc_last3": ("mean test accuracy of the last 3 evaluations", "1"),
    "train_acc": ("final accuracy on the whole training split", "1"),
    "train_loss": ("final cross-entropy on the whole training split", "nat"),
    "diverged": ("training hit a non-finite loss", "1"),
    "diverged_step": ("step of the first non-finite loss (-1: none)", "1"),
    "train_seconds": ("wall time of the training loop", "s"),
}

