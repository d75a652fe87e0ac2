"""The training loop's own per-step records (what every cell stores, `layerlab.training.loop.run_dataset`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from layerlab.data.datasets import Split
from layerlab.training.optim import evaluate


@dataclass
class Run:
    """The loop's own per-step records."""

    steps: list[int] = field(default_factory=list)
    stages: list[int] = field(default_factory=list)
    scalars: dict[str, list[float]] = field(default_factory=dict)
    alpha: list[np.ndarray] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)

    @staticmethod
    def add(store: dict[str, list[float]], **values: float | torch.Tensor) -> None:
        for k, v in values.items():
            store.setdefault(k, []).append(v.item() if isinstance(v, torch.Tensor) else float(v))

    def evaluate(self, net: nn.Module, step: int, split: Split) -> tuple[float, float]:
        test_acc, test_loss = evaluate(net, split)
        self.eval_steps.append(step)
        self.add(self.evals, test_acc=test_acc, test_loss=test_loss)
        return test_acc, test_loss
