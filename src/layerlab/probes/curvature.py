"""Layer-wise conditioning analysis (paper 004, Huang et al. 2020): the K-FAC factors of every layer's Fisher block.

For each Linear/Conv2d layer k with input a (the layer *input*, paper Eq. 4 with its index typo fixed) and
pre-activation output h (before any BatchNorm), the layer's Fisher block is approximated by

    F_k ~ Sigma_x (x) Sigma_grad,   Sigma_x = E[a a^T] (uncentred),   Sigma_grad = E[d d^T],  d = dl_i/dh_i,

and by Proposition 1 lambda_max(F_k) = lambda_max(Sigma_x) lambda_max(Sigma_grad), kappa(F_k) = kappa(Sigma_x)
kappa(Sigma_grad). Estimators follow the official code (Linear_AllMode.lua): d_i = m * dL_batch/dh_i, where L_batch
is the mean cross-entropy over the m measured rows (in BatchNorm nets d_i includes BN's cross-sample terms; BN stays
in training mode). Labels are the true ones (`empirical`, the code's and the seed notes' choice for training-time
diagnostics) or drawn from the model (`sampled`, the FIM's q(y|x)). Conv layers use channel-wise statistics over
all spatial positions (App. C.1), each averaged per location: Sigma_x is C_in x C_in, Sigma_grad C_out x C_out.

Eigenvalues are computed in float64 and clamped at >= 0. Condition numbers (seed-004 notes, section 6.5):
kappa_p = lambda_1 / lambda_ceil(p d) over the descending spectrum (p = 1: the ordinary kappa; inf when the
denominator is below 1e-12 lambda_1, float64's resolution of the spectrum; log10 copies for plots show inf as
12), and kappa_nz = lambda_max / the smallest eigenvalue > 1e-12 lambda_max (the paper's "minimum non-zero
eigenvalue"). The Kronecker product's kappa_p for p < 1 does not factorise: it is read off the
sorted product spectrum {lambda_i(Sigma_x) lambda_j(Sigma_grad)}.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.nn import functional as F

from layerlab.catalog.probes import CurvatureParams
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.measurements.spectra import (
    P_LEVELS,
    kron_spectrum,
    log10_kappa,
    log10_positive,
    spectral_summary,
    spectrum,
)
from layerlab.nets.layers import Network, kept_buffers, measured_layers
from layerlab.probes.base import StepState, TrainingProbe
from layerlab.training.optim import logged_steps


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C) as is; (N, C, H, W) -> (N*H*W, C): every spatial location is one example (App. C.1)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1]) if t.ndim > 2 else t


def second_moment(rows: torch.Tensor) -> torch.Tensor:
    """E[r r^T] over the rows, float64 (uncentred)."""
    r = rows.double()
    return r.T @ r / r.shape[0]


def layer_factors(model: Network, x: torch.Tensor, y: torch.Tensor, labels: str,
                  generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(Sigma_x, Sigma_grad)] per measured layer, float64, from one forward and one backward pass on (x, y)."""
    return _factors_and_weight_grads(model, x, y, labels, generator)[0]


def _factors_and_weight_grads(model: Network, x: torch.Tensor, y: torch.Tensor, labels: str,
                              generator: torch.Generator | None):
    """`layer_factors`, dL_batch/dW of every measured layer and the output layer's `per_example_lmax`.

    BatchNorm running statistics are left as they were and no parameter's `.grad` is touched, so the
    measurement leaves training exactly as it was.
    """
    layers = measured_layers(model)
    inputs, outputs = [], []

    def hook(_module, args, output):
        inputs.append(args[0].detach())
        outputs.append(output)

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.enable_grad(), kept_buffers(model):
            logits, _ = model(x)
            if labels == "sampled":
                probs = torch.softmax(logits.detach().double(), 1)
                y = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
            elif labels != "empirical":
                raise ValueError(f"unknown curvature labels '{labels}'")
            loss = F.cross_entropy(logits, y)
            grads = torch.autograd.grad(loss, outputs + [m.weight for m in layers])
    finally:
        for h in handles:
            h.remove()
    m = x.shape[0]
    grads, weight_grads = grads[: len(layers)], grads[len(layers) :]
    factors = [(second_moment(_rows(a)), second_moment(_rows(g) * m)) for a, g in zip(inputs, grads, strict=True)]
    return factors, weight_grads, per_example_lmax(inputs[-1], grads[-1] * m)


def per_example_lmax(a: torch.Tensor, d: torch.Tensor) -> float:
    """lambda_max of the per-example weight-gradient second moment E[vec(d_i a_i^T) vec(d_i a_i^T)^T] of a Linear
    layer (paper 004, Fig. 6c), via its m x m Gram matrix (d_i . d_j)(a_i . a_j) / m, which has the same non-zero
    eigenvalues; NaN for conv layers, whose per-example gradients sum over positions."""
    if a.ndim != 2:
        return float("nan")
    a, d = a.double(), d.double()
    return float(torch.linalg.eigvalsh((d @ d.T) * (a @ a.T) / a.shape[0])[-1])


def sigma_max(t: torch.Tensor) -> float:
    """Largest singular value of a weight (or its gradient), as (out, in * kernel)."""
    return float(torch.linalg.matrix_norm(t.detach().double().flatten(1), ord=2))


Record = dict[str, Any]  # one layer's measures: spectra (arrays) and scalars


def layer_record(weight: torch.Tensor, sigma_x: torch.Tensor, sigma_g: torch.Tensor,
                 weight_grad: torch.Tensor | None = None) -> Record:
    """All per-layer quantities of one measurement."""
    ex, eg = spectrum(sigma_x), spectrum(sigma_g)
    ek = kron_spectrum(ex, eg)
    rec: Record = {"eig_x": ex, "eig_g": eg,
                                          "weight_norm": float(weight.detach().double().norm())}
    if weight_grad is not None:  # Definition 1: weight domination when sigma_max(dL/dW) << sigma_max(W)
        rec["domination"] = sigma_max(weight_grad) / sigma_max(weight)
    for name, eig in (("x", ex), ("g", eg), ("kron", ek)):
        rec.update(spectral_summary(eig, name))
    return rec


def measure(model: Network, x: torch.Tensor, y: torch.Tensor, labels: str,
            generator: torch.Generator | None = None) -> list[Record]:
    """One measurement: `layer_record` of every measured layer."""
    factors, weight_grads, lmax_wgrad_out = _factors_and_weight_grads(model, x, y, labels, generator)
    records = [layer_record(m.weight, sx, sg, gw)
               for m, (sx, sg), gw in zip(measured_layers(model), factors, weight_grads, strict=True)]
    for rec in records:
        rec["lmax_wgrad"] = np.nan
    records[-1]["lmax_wgrad"] = lmax_wgrad_out
    return records


def curvature_dataset(steps: list[int], records: list[list[Record]],
                      seconds: float = float("nan")) -> xr.Dataset:
    """Stack per-step measurements into (step, layer) scalars, (step, layer, p) condition numbers and
    (step, layer, eigen) spectra NaN-padded to the widest factor, plus per-cell summaries."""
    n_layers = len(records[0])
    width = max(max(len(r["eig_x"]), len(r["eig_g"])) for r in records[0])
    coords = {"step": np.asarray(steps), "layer": np.arange(n_layers), "p": np.asarray(P_LEVELS),
              "eigen": np.arange(width)}
    data: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for key in records[0][0]:
        first = records[0][0][key]
        if key.startswith("eig_"):
            arr = np.full((len(steps), n_layers, width), np.nan)
            for i, rec in enumerate(records):
                for j, r in enumerate(rec):
                    arr[i, j, : len(r[key])] = r[key]
            data[key] = (("step", "layer", "eigen"), arr)
        elif np.ndim(first):
            data[key] = (("step", "layer", "p"), np.array([[r[key] for r in rec] for rec in records]))
        else:
            data[key] = (("step", "layer"), np.array([[r[key] for r in rec] for rec in records]))
    ds = xr.Dataset(data, coords=coords)
    for name in ("x", "g", "kron"):
        ds[f"log10_kappa_{name}"] = log10_kappa(ds[f"kappa_{name}"])
        ds[f"log10_lmax_{name}"] = log10_positive(ds[f"lmax_{name}"])
    if "domination" in ds:
        ds["log10_domination"] = log10_positive(ds["domination"])
    for name in ("x", "g"):
        k90 = ds[f"log10_kappa_{name}"].sel(p=0.9).mean("layer").values
        ds[f"log10_kappa90_{name}_init"] = float(k90[0]) if steps[0] == 0 else np.nan
        ds[f"log10_kappa90_{name}_final"] = float(k90[-1])
        singular = xr.apply_ufunc(np.isinf, ds[f"kappa_{name}"].sel(p=0.9)).mean("layer").values
        ds[f"singular90_{name}_init"] = float(singular[0]) if steps[0] == 0 else np.nan
        ds[f"singular90_{name}_final"] = float(singular[-1])
    for key in ("lmax_x", "lmax_g", "lmax_kron", "lmax_wgrad", "weight_norm"):  # paper 004's last-layer diagnostics
        ds[f"last_{key}"] = ds[key].isel(layer=-1, drop=True)
    ds["curvature_seconds"] = seconds
    return ds


class CurvatureProbe(TrainingProbe):
    """Every `curvature_every` steps (and the last), on the first `curvature_samples` training rows as one batch:
    the K-FAC factors of every layer's Fisher block, their spectra, condition numbers, weight domination, and the
    last-layer diagnostics; dims (step, layer[, p | eigen])."""

    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        params = cell[CurvatureParams]
        self.schedule = logged_steps(cell.run.steps, params.curvature_every)
        rows = torch.arange(min(params.curvature_samples, len(data.train.y)), device=data.train.x.device)
        self.x, self.y = data.train.x[rows], data.train.y[rows]
        self.generator = torch.Generator().manual_seed(cell.run.seed)  # sampled labels
        self.steps: list[int] = []
        self.records: list[list[Record]] = []
        self.seconds = 0.0

    def after_forward(self, state: StepState) -> None:
        if state.step in self.schedule and state.finite:
            tic = time.perf_counter()
            labels = self.cell[CurvatureParams].curvature_labels
            self.records.append(measure(state.model, self.x, self.y, labels, self.generator))
            self.steps.append(state.step)
            self.seconds += time.perf_counter() - tic

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        return curvature_dataset(self.steps, self.records, self.seconds) if self.records else None
