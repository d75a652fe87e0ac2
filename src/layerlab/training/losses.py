"""Training losses: cross-entropy, the layer-wise batch-entropy (LBE) loss of paper 000, and the output heads
(gradient amplification) of paper 001, chapter 4."""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from layerlab.catalog.losses import head_targets
from layerlab.core.sections import LossParams

T = TypeVar("T")
# the c of batch entropy H^l = mean_k 1/2 log(c sigma_k^2 + 1) (paper 000, Eq. 2-3; `layerlab.probes.batch_entropy`)
ENTROPY_CONSTANTS = {"pi_e": math.pi * math.e, "two_pi_e": 2 * math.pi * math.e}


def batch_entropy(a: torch.Tensor, constant: str, eps: float = 1.0) -> torch.Tensor:
    """Batch entropy of activations `a` of shape (B, ...); every non-batch entry counts as one neuron."""
    if a.shape[0] < 2:
        raise ValueError(f"batch entropy needs a batch of at least 2 samples, got {a.shape[0]}")
    std = a.flatten(1).std(dim=0)  # unbiased; torch returns a zero (not NaN) gradient for constant columns
    return (0.5 * torch.log(ENTROPY_CONSTANTS[constant] * std**2 + eps)).mean()


def layer_entropies(hidden: list[torch.Tensor], constant: str) -> torch.Tensor:
    """Batch entropy of each hidden layer, shape (n_layers,)."""
    return torch.stack([batch_entropy(a, constant) for a in hidden])


class LBELoss(nn.Module):
    """L = CE + CE * L_BE with L_BE = beta * mean_l (H^l - max(alpha_min, |alpha^l|))^2 (Eq. 5-7).

    One learnable alpha per regularized layer, trained by the same optimizer as the weights; the mean runs
    over the regularized layers (the official code's normalisation of Eq. 6); CE is not detached (Eq. 8).
    """

    def __init__(self, n_layers: int, alpha: float, alpha_min: float, beta: float, constant: str):
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


def regularized(hidden: list[T], which: str) -> list[T]:
    """The hidden layers LBE acts on: 'middle' drops the first and last (official FNN code), or 'all'."""
    return hidden[1:-1] if which == "middle" else hidden


# Output heads of Oland's thesis, chapter 4 (gradient amplification). Each head is the loss
#     L = mean_m sum_k [ Phi(x_mk) - t_mk x_mk ] + c(t)
# with Phi' = act, so dL/dx_mk = (act(x_mk) - t_mk) / batch: the canonical delta y - t of every head (Bishop's
# canonical pairs; section 4.3), computed by autograd from the true loss (no stop-gradient surrogate needed).
# x are the raw logits (the prediction is their argmax); t is the one-hot target scaled to {off, on}.


def head_activation(loss: LossParams, x: torch.Tensor) -> torch.Tensor:
    """y = act(x) of the head: the value its canonical delta y - t compares with the target."""
    match loss.loss:
        case "mse":
            return x
        case "sigmoid":
            return torch.sigmoid(x)
        case "tanh":
            return torch.tanh(x)
        case "exp_ga":
            return loss.exp_alpha * torch.exp(x)
        case "pow3_ga":
            return loss.pow3_alpha * x**3 + loss.pow3_beta
    raise ValueError(f"no output head for loss {loss.loss!r}")


def head_loss(loss: LossParams, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The head's loss on logits `x` (batch, classes) and labels `y`: mean over the batch, sum over classes.

    mse: 1/2 (x - t)^2; sigmoid: softplus(x) - t x (binary CE with logits); tanh: ln cosh x - t x;
    exp_ga: the sparse CE alpha e^x - t ln(alpha e^x) (section 4.6); pow3_ga: the negative-correlation loss
    alpha x^4 / 4 + beta x - t x (section 4.8, "+beta y" read as +beta x_mk).
    """
    off, on = head_targets(loss)
    t = torch.full_like(x, off).scatter_(1, y[:, None], on)
    match loss.loss:
        case "mse":
            per = 0.5 * (x - t) ** 2
        case "sigmoid":
            per = F.softplus(x) - t * x
        case "tanh":  # ln cosh x = |x| + ln(1 + e^{-2|x|}) - ln 2, stable for large |x|
            per = x.abs() + F.softplus(-2 * x.abs()) - math.log(2.0) - t * x
        case "exp_ga":
            alpha = loss.exp_alpha
            per = alpha * torch.exp(x) - t * (math.log(alpha) + x)
        case "pow3_ga":
            per = 0.25 * loss.pow3_alpha * x**4 + loss.pow3_beta * x - t * x
        case _:
            raise ValueError(f"no output head for loss {loss.loss!r}")
    return per.sum(1).mean()


def output_loss(loss: LossParams, logits: torch.Tensor, y: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
    """The training loss without LBE: the cross-entropy `ce` (loss 'ce') or the cell's chapter-4 head."""
    return ce if loss.loss == "ce" else head_loss(loss, logits, y)


class Objective(nn.Module):
    """The cell's training loss on (logits, hidden): CE, CE + CE * L_BE on the regularized layers (`ce_lbe`; its
    alpha are trained with the weights), or a chapter-4 output head. Returns (loss, CE, L_BE or NaN)."""

    def __init__(self, loss: LossParams, n_layers: int):
        super().__init__()
        self.loss = loss
        self.layers = regularized(list(range(n_layers)), loss.lbe_layers)
        self.n_layers = n_layers
        self.lbe = (LBELoss(len(self.layers), loss.lbe_alpha, loss.lbe_alpha_min, loss.lbe_beta,
                            loss.entropy_constant) if loss.loss == "ce_lbe" else None)

    def forward(self, logits: torch.Tensor, y: torch.Tensor,
                hidden: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ce = F.cross_entropy(logits, y)
        if self.lbe:
            total, lbe = self.lbe(ce, regularized(hidden, self.loss.lbe_layers))
            return total, ce, lbe
        return output_loss(self.loss, logits, y, ce), ce, torch.tensor(np.nan)

    @torch.no_grad()
    def alpha(self) -> np.ndarray:
        """LBE's target per hidden layer (NaN where not regularized)."""
        alpha = np.full(self.n_layers, np.nan, dtype=np.float32)
        if self.lbe:
            alpha[self.layers] = self.lbe.target().detach().cpu().numpy()
        return alpha
