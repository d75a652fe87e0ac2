"""What every training loop and measurement shares: optimizers, seeded batch streams, schedules, evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from layerlab.core.sections import OptimizerParams
from layerlab.data.datasets import Split

EVAL_BATCH = 1000


def make_optimizer(opt: OptimizerParams, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD or Adam; `weight_decay_params: weights` exempts biases, gamma, beta (every 0/1-d tensor) from L2."""
    groups: list[dict[str, Any]] = [{"params": params}]
    if opt.weight_decay_params == "weights":
        groups = [{"params": [p for p in params if p.ndim > 1]},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if opt.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                               nesterov=opt.nesterov)
    return torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.weight_decay)


class Batches(Iterator[torch.Tensor]):
    """Endless index batches: a fresh seeded permutation each epoch, partial last batch dropped. Its position and
    generator are its state (a resumed run draws the same batches)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def __next__(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        self.pos += self.batch_size
        return self.perm[self.pos - self.batch_size : self.pos]

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]
        self.generator.set_state(state["generator"])


def logged_steps(steps: int, every: int) -> set[int]:
    """0, every, 2 every, ... and the last step."""
    return set(range(0, steps, every)) | {steps}


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
