"""K networks of one architecture as one fused network: the model axis folded into the batch.

A fused network takes the K networks' batches stacked as one batch of K x B rows (model k's rows are k*B..(k+1)*B-1)
and returns the stacked outputs, so every per-sample module (activations, pooling, padding, flatten, residual
additions, the network's own `forward`) runs unchanged on the stacked batch. Only the modules that hold per-model
state are replaced (`FUSED`): Linear maps become one batched matmul over the model axis, convolutions, BatchNorm
and dropout run per model on the model's own rows. On the CPU every replacement computes model k's slice bit for bit
as the unfused module computes it alone (`torch.baddbmm`'s slice k is `torch.addmm` for model k, whatever K); the
tests compare each against the unfused networks.

`fuse(models)` builds the fused network and makes every model's parameters and buffers views of its slice of the
fused ones: the K networks stay usable as themselves (evaluation, probes, checkpoints, final weights) and always
hold what the fused network trains.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from layerlab.nets.norm import AblatedBatchNorm


class NotFusable(ValueError):
    """A network holds a module with per-model state that has no fused counterpart."""


class BatchedLinear(torch.autograd.Function):
    """y_k = x_k W_k^T + b_k for every model k; backward with the same matmul layouts as `nn.Linear`'s (the weight
    gradient as g^T x, not (x^T g)^T: only that order reproduces addmm's backward bit for bit)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        wt = weight.transpose(1, 2)
        return torch.baddbmm(bias.unsqueeze(1), x, wt) if bias is not None else torch.bmm(x, wt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


# torch's CPU bmm computes products of fewer multiply-adds (rows x inner x cols) than this with a plain loop, whose
# summation order differs from the gemm behind nn.Linear's addmm: below it each model's Linear runs on its own
SMALL_BMM = 400


class FusedModule(nn.Module):
    """A module of K models: `per_model` names its parameters and buffers that have a leading model axis."""

    per_model: tuple[str, ...] = ()

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each model's rows of the stacked batch."""
        return list(x.chunk(self.k))


def stacked(modules: Sequence[nn.Module], name: str) -> torch.Tensor | None:
    """The modules' tensors `name` stacked along a new leading model axis (None: they have none)."""
    return None if getattr(modules[0], name) is None else stack(modules, name)


def stack(modules: Sequence[nn.Module], name: str) -> torch.Tensor:
    return torch.stack([getattr(m, name).detach() for m in modules])


class FusedLinear(FusedModule):
    per_model = ("weight", "bias")

    def __init__(self, linears: list[nn.Linear]):
        super().__init__(len(linears))
        self.weight = nn.Parameter(stack(linears, "weight"))
        bias = stacked(linears, "bias")
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0] // self.k
        if rows * self.weight[0].numel() < SMALL_BMM:
            biases = [None] * self.k if self.bias is None else self.bias.unbind(0)
            return torch.cat([F.linear(xk, w, b) for xk, w, b in zip(self.chunks(x), self.weight.unbind(0), biases,
                                                                       strict=True)])
        y = BatchedLinear.apply(x.reshape(self.k, -1, x.shape[-1]), self.weight, self.bias)
        return y.reshape(-1, y.shape[-1])


class FusedConv2d(FusedModule):
    """Each model's convolution on its rows (the unfused kernel, so the slices are exact; a grouped convolution
    over the models would be one call but not bit-identical)."""

    per_model = ("weight", "bias")

    def __init__(self, convs: list[nn.Conv2d]):
        super().__init__(len(convs))
        conv = convs[0]
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if conv.padding_mode != "zeros":
            raise NotFusable(f"Conv2d with padding_mode '{conv.padding_mode}'")
        self.weight = nn.Parameter(stack(convs, "weight"))
        bias = stacked(convs, "bias")
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biases = [None] * self.k if self.bias is None else self.bias.unbind(0)
        return torch.cat([F.conv2d(xk, w, b, self.stride, self.padding, self.dilation, self.groups)
                          for xk, w, b in zip(self.chunks(x), self.weight.unbind(0), biases, strict=True)])


class FusedBatchNorm(FusedModule):
    """Per-model batch statistics and running statistics (`layerlab.nets.norm.AblatedBatchNorm`, K of them)."""

    per_model = ("gamma", "beta", "running_mean", "running_var")
    gamma: torch.Tensor
    beta: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, norms: list[AblatedBatchNorm]):
        super().__init__(len(norms))
        norm = norms[0]
        self.eps, self.momentum = norm.eps, norm.momentum
        for name in self.per_model:
            value = stack(norms, name)
            if name in ("gamma", "beta") and norm.learnable(name):
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.batch_norm(xk, mean, var, gamma, beta, self.training, self.momentum, self.eps)
                          for xk, mean, var, gamma, beta in zip(
                              self.chunks(x), self.running_mean.unbind(0), self.running_var.unbind(0),
                              self.gamma.unbind(0), self.beta.unbind(0), strict=True)])


class ModelRNG:
    """Each model's own stream of the global torch RNG: what the model's unfused training would draw from it
    (dropout masks, a probe's random draws). `model(k)` swaps model k's state in for the duration."""

    def __init__(self, states: list[torch.Tensor]):
        self.states = states

    @contextmanager
    def model(self, k: int) -> Iterator[None]:
        outside = torch.get_rng_state()
        torch.set_rng_state(self.states[k])
        try:
            yield
        finally:
            self.states[k] = torch.get_rng_state()
            torch.set_rng_state(outside)


class FusedDropout(FusedModule):
    """Each model's dropout mask drawn from its own RNG stream, on its rows (as `nn.Dropout` alone would)."""

    def __init__(self, dropouts: list[nn.Dropout], rng: ModelRNG):
        super().__init__(len(dropouts))
        self.p, self.inplace, self.rng = dropouts[0].p, dropouts[0].inplace, rng

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        out = []
        for k, xk in enumerate(self.chunks(x)):
            with self.rng.model(k):
                out.append(F.dropout(xk, self.p, True, self.inplace))
        return torch.cat(out)


FUSED: dict[type[nn.Module], Callable[..., FusedModule]] = {
    nn.Linear: FusedLinear, nn.Conv2d: FusedConv2d, AblatedBatchNorm: FusedBatchNorm,
}


def fused_module(modules: list[nn.Module], rng: ModelRNG) -> FusedModule | None:
    """The fused counterpart of K corresponding modules; None for a module without per-model state."""
    kind = type(modules[0])
    if kind is nn.Dropout:
        return FusedDropout([m for m in modules if isinstance(m, nn.Dropout)], rng)
    if kind in FUSED:
        return FUSED[kind](modules)
    if any(True for _ in modules[0].parameters(recurse=False)) or any(True for _ in modules[0].buffers(recurse=False)):
        raise NotFusable(f"{kind.__name__} holds parameters or buffers and has no fused counterpart")
    return None


def check_alike(models: list[nn.Module]) -> None:
    reference = [(name, type(m)) for name, m in models[0].named_modules()]
    shapes = [(name, tuple(t.shape)) for name, t in models[0].state_dict().items()]
    for k, model in enumerate(models[1:], 1):
        if [(name, type(m)) for name, m in model.named_modules()] != reference or \
                [(name, tuple(t.shape)) for name, t in model.state_dict().items()] != shapes:
            raise NotFusable(f"model {k} differs from model 0 in its modules or their shapes")


def fuse(models: list[nn.Module], rng: ModelRNG) -> nn.Module:
    """One network computing all `models` on the stacked batch; each model's parameters and buffers become views
    of its slice of the fused ones."""
    check_alike(models)
    fused = copy.deepcopy(models[0])
    per_model = [dict(m.named_modules()) for m in models]
    for name in [name for name, _ in fused.named_modules() if name]:
        replacement = fused_module([modules[name] for modules in per_model], rng)
        if replacement is None:
            continue
        parent, _, child = name.rpartition(".")
        fused.get_submodule(parent)._modules[child] = replacement
        for k, modules in enumerate(per_model):
            alias(modules[name], replacement, k)
    if not any(isinstance(m, FusedModule) for m in fused.modules()) and any(True for _ in fused.parameters()):
        raise NotFusable("the network's parameters sit in modules without fused counterparts")
    return fused


def alias(module: nn.Module, fused: FusedModule, k: int) -> None:
    """Make `module`'s per-model parameters and buffers views of model k's slice of `fused`'s."""
    for name in fused.per_model:
        value = getattr(fused, name)
        if value is None:
            continue
        own = getattr(module, name)
        if isinstance(own, nn.Parameter):
            own.data = value.data[k]
        else:
            module._buffers[name] = value.data[k]


def unfuse(modules: list[nn.Module]) -> None:
    """Give every module's parameters and buffers their own storage again (copies of their current values): they no
    longer follow the fused network."""
    for model in modules:
        for module in model.modules():
            for p in module.parameters(recurse=False):
                p.data = p.data.clone()
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = b.clone()
