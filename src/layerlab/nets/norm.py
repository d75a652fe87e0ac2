"""BatchNorm with switchable learnable components (paper 002's ablation, Section 3.1.1).

Every variant keeps BatchNorm's non-adaptive normalization (x - mu_B) / sqrt(sigma_B^2 + eps) over the batch
(and, for conv maps, the spatial positions) of each channel, with running statistics for evaluation, and then
applies gamma * x_hat + beta. A component the variant ablates is frozen at its neutral value (gamma = 1,
beta = 0) as a buffer: it never reaches the optimizer, so it stays exactly neutral.

    none            no BatchNorm layer at all (the thesis's Vanilla network)
    bn              normalization only                                   BN       (Eq. 3.2)
    bn_gamma        normalization + learnable scale                       BN_gamma (Eq. 3.4)
    bn_beta         normalization + learnable shift                       BN_beta  (Eq. 3.3)
    bn_gamma_beta   normalization + learnable scale and shift (full BN)   BN_gamma,beta (Eq. 3.1)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# variant -> (learnable gamma, learnable beta); None: no BatchNorm layer
BN_VARIANTS: dict[str, tuple[bool, bool] | None] = {
    "none": None,
    "bn": (False, False),
    "bn_gamma": (True, False),
    "bn_beta": (False, True),
    "bn_gamma_beta": (True, True),
}
NEUTRAL = {"gamma": 1.0, "beta": 0.0}


class AblatedBatchNorm(nn.Module):
    """BatchNorm over dim 1 of (N, C) or (N, C, H, W) inputs; numerically torch's BatchNorm1d/2d.

    `gamma` and `beta` are Parameters when learnable, else buffers fixed at 1 and 0.
    """

    def __init__(self, channels: int, learn_gamma: bool, learn_beta: bool, eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        for name, learn in (("gamma", learn_gamma), ("beta", learn_beta)):
            value = torch.full((channels,), NEUTRAL[name])
            if learn:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    gamma: torch.Tensor  # a Parameter when learnable, else a buffer
    beta: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def learnable(self, name: str) -> bool:
        return isinstance(getattr(self, name), nn.Parameter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.gamma, self.beta, self.training,
                            self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.gamma.numel()}, learn_gamma={self.learnable('gamma')}, learn_beta={self.learnable('beta')}"


def batch_norm(channels: int, variant: str) -> list[nn.Module]:
    """The variant's BatchNorm layer for `channels` channels as a list: empty for `none`, else one layer."""
    if variant not in BN_VARIANTS:
        raise ValueError(f"unknown bn_variant '{variant}'; known: {', '.join(BN_VARIANTS)}")
    learn = BN_VARIANTS[variant]
    return [] if learn is None else [AblatedBatchNorm(channels, *learn)]
