"""One optimizer step for K models' fused parameters, each model with its own hyperparameters and state.

Every model keeps its own unfused optimizer (`torch.optim.Adam` or `SGD` over its own parameters, which are views of
the fused ones, `layerlab.training.fused`): its param groups hold the model's lr (moved by its LR schedule), weight
decay and momentum, and its `state` holds views of the fused state. The fused step reproduces torch's single-tensor
implementations (`_single_tensor_adam`, `_single_tensor_sgd`, what a CPU optimizer runs by default) on the stacked
tensors: the same operations in the same order, per-model scalars applied row by row where an operation takes a
scalar (`add_rows`) and decomposed into the kernel's own arithmetic where it takes a tensor (Adam's final addcdiv,
`self + (value * t1) / t2`). Each model's optimizer state is then exactly what its own `step()` would have left, so
its checkpoints are those of unfused training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


def add_rows(out: torch.Tensor, x: torch.Tensor, alphas: Sequence[float]) -> None:
    """out[k] += alphas[k] * x[k] in place, as `out[k].add_(x[k], alpha=alphas[k])` computes it (rows with alpha 0
    unchanged): one call where all alphas agree, else one `_foreach_add_` over the rows of each value."""
    values = set(alphas)
    if len(values) == 1:
        if alphas[0] != 0:
            out.add_(x, alpha=alphas[0])
        return
    rows, xs = out.unbind(0), x.unbind(0)
    for value in values - {0}:
        picked = [k for k, a in enumerate(alphas) if a == value]
        torch._foreach_add_([rows[k] for k in picked], [xs[k] for k in picked], alpha=value)


def column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-model scalars as a (K, 1, ...) tensor of `like`'s dtype, broadcasting over a model's entries."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *[1] * (like.ndim - 1))


def same(values: Sequence, what: str) -> object:
    if len(set(values)) != 1:
        raise ValueError(f"the fused models need the same {what} (got {sorted(set(values))})")
    return values[0]


@dataclass
class FusedParam:
    """One tensor with a leading model axis whose rows are models' own parameters (`shadows[k]` is a view of row k,
    trained by `optimizers[k]`), and how to get its gradient."""

    tensor: torch.Tensor
    grad: Callable[[], torch.Tensor | None]
    shadows: list[nn.Parameter]
    optimizers: list[torch.optim.Optimizer]
    stacked: bool = False  # autograd fills the models' own gradients (else the fused tensor's)

    @classmethod
    def of_leaf(cls, leaf: nn.Parameter, shadows: list[nn.Parameter],
                optimizers: list[torch.optim.Optimizer]) -> FusedParam:
        """A fused network's parameter: autograd fills its gradient."""
        return cls(leaf, lambda: leaf.grad, shadows, optimizers)

    @classmethod
    def stack(cls, params: list[nn.Parameter], optimizers: list[torch.optim.Optimizer]) -> FusedParam:
        """Parameters outside the fused network (LBE's alpha): stacked storage, each parameter a view of its row,
        the gradient stacked from theirs (autograd fills each model's own)."""
        stacked = torch.stack([p.detach() for p in params])
        for k, p in enumerate(params):
            p.data = stacked[k]

        def grad() -> torch.Tensor | None:
            grads = [p.grad for p in params]
            if all(g is None for g in grads):
                return None
            return torch.stack([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)])
        return cls(stacked, grad, params, optimizers, stacked=True)

    def zero_grad(self) -> None:
        """Before a backward pass (as each model's `optimizer.zero_grad(set_to_none=True)`)."""
        if self.stacked:
            for p in self.shadows:
                p.grad = None
        else:
            self.tensor.grad = None

    def share_grad(self, ks: list[int]) -> None:
        """Models ks see their rows of the fused gradient as their own `.grad` (a fused network's parameter)."""
        if self.tensor.grad is not None:
            for k in ks:
                self.shadows[k].grad = self.tensor.grad[k]


@dataclass
class Entry:
    """A fused parameter as the optimizer steps it: the models' param groups (their lr read at every step, the rest
    fixed) and their state dicts for it."""

    param: FusedParam
    groups: list[dict]
    states: list[dict]
    decay: list[float]
    momentum: list[float]


class FusedOptimizer:
    """Steps fused parameters with the models' own optimizers' hyperparameters and state."""

    def __init__(self, params: list[FusedParam]):
        kinds = {type(opt) for param in params for opt in param.optimizers}
        if len(kinds) > 1 or not kinds <= {torch.optim.Adam, torch.optim.SGD}:
            raise ValueError(f"fused steps exist for Adam and SGD, one kind per pack (got {kinds})")
        self.adam = kinds == {torch.optim.Adam}
        self.entries: list[Entry] = []
        for param in params:
            found = [next((g for g in opt.param_groups if any(q is p for q in g["params"])), None)
                     for opt, p in zip(param.optimizers, param.shadows, strict=True)]
            groups = [group for group in found if group is not None]
            if not groups:
                continue  # trained by none of the models (frozen weights)
            if len(groups) < len(found):
                raise ValueError("a fused parameter is trained by some models and not by others")
            self.check(groups)
            states = [opt.state[p] for opt, p in zip(param.optimizers, param.shadows, strict=True)]
            self.entries.append(Entry(param, groups, states, [g["weight_decay"] for g in groups],
                                      [g.get("momentum", 0.0) for g in groups]))
        self.adopt()

    def check(self, groups: list[dict]) -> None:
        """The models' settings a fused step must share (all but lr, weight decay and momentum)."""
        if self.adam:
            same([g["betas"] for g in groups], "Adam betas")
            same([g["eps"] for g in groups], "Adam eps")
            if any(g["amsgrad"] or g["maximize"] or g.get("decoupled_weight_decay") for g in groups):
                raise ValueError("fused Adam steps plain Adam (no amsgrad, maximize or decoupled weight decay)")
        else:
            same([g["nesterov"] for g in groups], "SGD nesterov")
            if any(g["maximize"] or g["dampening"] for g in groups):
                raise ValueError("fused SGD steps plain SGD (no maximize, no dampening)")
            if any(g["momentum"] for g in groups) and not all(g["momentum"] for g in groups):
                raise ValueError("fused SGD needs momentum in every model or in none")

    def adopt(self) -> None:
        """Fused state from the models' optimizer states (empty before the first step, or restored from
        checkpoints), each model's entries becoming views of it."""
        for entry in self.entries:
            states = entry.states
            for name in {name for state in states for name in state}:
                if any(name not in state for state in states):
                    raise ValueError(f"the fused models' optimizer states differ (only some have {name})")
                stack = torch.stack([state[name] for state in states])
                if name == "step" and not bool((stack == stack[0]).all()):
                    raise ValueError(f"the fused models have taken different numbers of steps ({stack.tolist()})")
                for k, state in enumerate(states):
                    state[name] = stack[k]

    def zero_grad(self) -> None:
        for entry in self.entries:
            entry.param.zero_grad()

    @torch.no_grad()
    def step(self) -> None:
        for entry in self.entries:
            grad = entry.param.grad()
            if grad is not None:
                (self.adam_step if self.adam else self.sgd_step)(entry, entry.param.tensor, grad)

    def adam_step(self, entry: Entry, param: torch.Tensor, grad: torch.Tensor) -> None:
        beta1, beta2 = entry.groups[0]["betas"]
        states = entry.states
        if not states[0]:  # the first step: torch's lazy state, as views of fused tensors
            self.init_state(states, step=torch.zeros(len(states)), exp_avg=torch.zeros_like(param),
                            exp_avg_sq=torch.zeros_like(param))
        steps, exp_avg, exp_avg_sq = (self.fused_state(states, name) for name in ("step", "exp_avg", "exp_avg_sq"))
        steps += 1
        if any(entry.decay):
            grad = grad.clone()
            add_rows(grad, param, entry.decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(steps[0])  # the models step in lockstep (adopt() stacked equal counts)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_sizes = [g["lr"] / bias_correction1 for g in entry.groups]
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(entry.groups[0]["eps"])
        if len(set(step_sizes)) == 1:
            param.addcdiv_(exp_avg, denom, value=-step_sizes[0])
        else:  # addcdiv's own arithmetic, self + (value * t1) / t2, with a value per model
            param.add_(exp_avg.mul(column([-s for s in step_sizes], param)).div_(denom))

    def sgd_step(self, entry: Entry, param: torch.Tensor, grad: torch.Tensor) -> None:
        states, momentum = entry.states, entry.momentum
        if any(entry.decay):
            grad = grad.clone()
            add_rows(grad, param, entry.decay)
        if any(momentum):
            if states[0].get("momentum_buffer") is None:
                self.init_state(states, momentum_buffer=grad.detach().clone())
                buf = self.fused_state(states, "momentum_buffer")
            else:
                buf = self.fused_state(states, "momentum_buffer")
                buf.mul_(column(momentum, buf)).add_(grad)
            if entry.groups[0]["nesterov"]:
                grad = grad.clone()
                add_rows(grad, buf, momentum)
            else:
                grad = buf
        add_rows(param, grad, [-g["lr"] for g in entry.groups])

    @staticmethod
    def init_state(states: list[dict], **fused: torch.Tensor) -> None:
        for k, state in enumerate(states):
            for name, tensor in fused.items():
                state[name] = tensor[k]

    @staticmethod
    def fused_state(states: list[dict], name: str) -> torch.Tensor:
        """The fused tensor behind the models' `name` entries (views of its rows)."""
        base = states[0][name]._base
        if base is None or base.shape[0] != len(states):
            raise RuntimeError(f"optimizer state '{name}' is not a view of a fused tensor (call adopt())")
        return base


def own_state(optimizers: list[torch.optim.Optimizer]) -> None:
    """Every optimizer's state tensors as copies of their own: no longer views of a fused optimizer's."""
    for opt in optimizers:
        for state in opt.state.values():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    state[name] = value.clone()
