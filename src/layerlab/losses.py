"""Training losses: cross-entropy, and the layer-wise batch-entropy (LBE) loss of paper 000."""

from __future__ import annotations

import torch
from torch import nn

from layerlab.probes.batch_entropy import batch_entropy


class LBELoss(nn.Module):
    """L = CE + CE * L_BE with L_BE = beta * mean_l (H^l - max(alpha_min, |alpha^l|))^2 (Eq. 5-7).

    One learnable alpha per regularized layer, trained by the same optimizer as the weights; the mean runs
    over the regularized layers (the official code's normalisation of Eq. 6); CE is not detached (Eq. 8).
    """

    def __init__(self, n_layers: int, alpha: float, alpha_min: float, beta: float, constant: str = "pi_e"):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((n_layers,), float(alpha)))
        self.alpha_min = alpha_min
        self.beta = beta
        self.constant = constant

    def target(self) -> torch.Tensor:
        return self.alpha.abs().clamp(min=self.alpha_min)

    def forward(self, ce: torch.Tensor, hidden: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (total loss, L_BE)."""
        h = torch.stack([batch_entropy(a, self.constant) for a in hidden])
        lbe = self.beta * ((h - self.target()) ** 2).mean()
        return ce + ce * lbe, lbe


def regularized(hidden: list[torch.Tensor], which: str) -> list[torch.Tensor]:
    """The hidden layers LBE acts on: 'middle' drops the first and last (official FNN code), or 'all'."""
    return hidden[1:-1] if which == "middle" else hidden
