"""Exact Fisher matrices of a small network against their layer blocks and K-FAC (paper 004, E1/E2: Figs. 1, 2,
A1-A4): is the layer-wise analysis of Section 3 a faithful proxy for the full curvature?

On a fixed probe subset of N training rows, as one batch (BatchNorm normalises with that batch's statistics, so
the Fisher of a BN net is that of the batch function; its running statistics are not touched), in float64, over
the weights theta = {W_k} of every Linear layer (paper Eq. 3; biases and BN gamma/beta are not part of F):

- `type2`: the true Fisher F = (1/N) sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n, J_n = d logits_n / d theta, y drawn
  from the model (for softmax cross-entropy this is the generalised Gauss-Newton matrix): curvlinops'
  GGNLinearOperator, materialised column block by column block.
- `empirical`: the empirical Fisher M = (1/N) sum_n g_n g_n^T, g_n = d l(y_n, logits_n) / d theta with the true
  labels (App. B, Fig. A2): curvlinops' EFLinearOperator.

F_k is the diagonal block of layer k's weight (vec(W_k) row-major, W_k of shape out x in). Its K-FAC approximation
(paper Eq. 4, with the layer *input* a) is G_k (x) A_k, A_k = (1/N) sum_i a_i a_i^T and
G_k = (1/N) sum_{n,c} D_{n,c}^T D_{n,c}, where D_{n,c} = d (v_{n,c} . logits_n) / d H_k (N x d_k: the output
gradient of every batch row i) for the backpropagated vectors v_{n,c} of the loss curvature: sqrt(p_nc) (e_c - p_n),
c = 1..C (sum_c v v^T = diag(p_n) - p_n p_n^T exactly; type2) or p_n - e_{y_n} (empirical). Without BatchNorm only
row n of D_{n,c} is non-zero and G_k is the usual E[delta delta^T]; with BatchNorm D_{n,c} carries BN's
cross-sample backward terms (as the official code's delta_i does) without products between different examples.

Per matrix: lambda_max, kappa_p and kappa_nz (`layerlab.probes.curvature`: the same definitions as the training
probe), and per layer the K-FAC's relative Frobenius error ||F_k - G_k (x) A_k||_F / ||F_k||_F, its lambda_max ratio
and the log10 ratio of its kappa_p to the exact block's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from layerlab.catalog.measurements import FisherParams
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
from layerlab.nets.layers import Network, measured_layers

FISHER_TYPES = ("type2", "empirical")
COLUMNS = 256  # columns of the identity multiplied by the curvlinops operator at once
COTANGENTS = 64  # backpropagated vectors per batched backward pass of the K-FAC factors


class Logits(nn.Module):
    """The network as a map input -> logits (what curvlinops differentiates)."""

    def __init__(self, net: Network):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def analysis_copy(model: Network) -> Network:
    """A float64 copy of `model` in training mode whose BatchNorms normalise with the batch statistics and keep no
    running statistics (the measurement leaves the network as it was)."""
    net = copy.deepcopy(model).double().train()
    for m in net.modules():
        if hasattr(m, "running_mean"):
            m.register_buffer("running_mean", None)
            m.register_buffer("running_var", None)
    return net


def fisher_weights(net: Network) -> list[torch.Tensor]:
    """theta: the weight of every measured (Linear/Conv) layer, hidden layers first, the output layer last."""
    return [m.weight for m in measured_layers(net)]


def exact_fisher(net: Network, x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The P x P matrix F (`type2`) or M (`empirical`) over `fisher_weights`, float64 (net from `analysis_copy`)."""
    from curvlinops import EFLinearOperator, GGNLinearOperator

    operator = {"type2": GGNLinearOperator, "empirical": EFLinearOperator}[kind]
    op = operator(Logits(net), nn.CrossEntropyLoss(), fisher_weights(net), [(x, y)])
    n = op.shape[1]
    blocks = []
    for start in range(0, n, COLUMNS):
        cols = torch.arange(start, min(start + COLUMNS, n), device=x.device)
        unit = torch.zeros(n, len(cols), dtype=torch.float64, device=x.device)
        unit[cols, torch.arange(len(cols), device=x.device)] = 1.0
        blocks.append(op @ unit)
    full = torch.cat(blocks, 1)
    return (full + full.T) / 2


def backprop_vectors(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, K, C): K vectors per example whose outer products sum to the loss curvature of its logits:
    sqrt(p_c) (e_c - p), c = 1..C (type2: sum = diag(p) - p p^T) or the one gradient p - e_y (empirical)."""
    p = torch.softmax(logits.detach().double(), 1)
    if kind == "type2":
        eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
        return p.sqrt()[:, :, None] * (eye[None] - p[:, None, :])
    if kind == "empirical":
        return (p - F.one_hot(y, p.shape[1]).double())[:, None, :]
    raise ValueError(f"unknown Fisher type '{kind}'; known: {', '.join(FISHER_TYPES)}")


def cotangents(v: torch.Tensor, coupled: bool) -> Iterator[torch.Tensor]:
    """Batches of (B, N, C) logit cotangents covering every v_{n,k}: one per k holding all examples at once when
    batch rows do not interact, else one per (n, k) with the single non-zero row n."""
    n, k, _ = v.shape
    if not coupled:
        yield from v.transpose(0, 1).split(COTANGENTS)
        return
    for start in range(0, n * k, COTANGENTS):
        idx = torch.arange(start, min(start + COTANGENTS, n * k), device=v.device)
        rows = idx // k
        cot = torch.zeros(len(idx), *v.shape[::2], dtype=v.dtype, device=v.device)
        cot[torch.arange(len(idx), device=v.device), rows] = v[rows, idx % k]
        yield cot


def kfac_factors(net: Network, x: torch.Tensor, y: torch.Tensor, kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(A_k, G_k)] of every measured layer (module docstring), float64 (net from `analysis_copy`)."""
    layers = measured_layers(net)
    inputs, outputs = [], []

    def keep(_module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        inputs.append(args[0])
        outputs.append(out)

    handles = [m.register_forward_hook(keep) for m in layers]
    try:
        with torch.enable_grad():
            logits = Logits(net)(x)
    finally:
        for h in handles:
            h.remove()
    coupled = any(hasattr(m, "running_mean") for m in net.modules())  # BatchNorm couples the batch rows
    grams = [torch.zeros(h.shape[1], h.shape[1], dtype=torch.float64, device=x.device) for h in outputs]
    for cot in cotangents(backprop_vectors(logits, y, kind), coupled):
        grads = torch.autograd.grad(logits, outputs, cot, retain_graph=True, is_grads_batched=True)
        for gram, d in zip(grams, grads, strict=True):
            gram += torch.einsum("bni,bnj->ij", d, d)
    n = x.shape[0]
    return [(a.detach().T @ a.detach() / n, gram / n) for a, gram in zip(inputs, grams, strict=True)]


def fisher_records(net: Network, x: torch.Tensor, y: torch.Tensor, kind: str) -> dict[str, np.ndarray]:
    """Every quantity of one checkpoint and Fisher type (full F, its layer blocks, their K-FAC approximations)."""
    full = exact_fisher(net, x, y, kind)
    eig_full = spectrum(full)
    rec: dict[str, list] = {}
    start = 0
    for weight, (a, g) in zip(fisher_weights(net), kfac_factors(net, x, y, kind), strict=True):
        stop = start + weight.numel()
        block = full[start:stop, start:stop]
        start = stop
        exact = spectral_summary(spectrum(block), "block")
        kfac = spectral_summary(kron_spectrum(spectrum(a), spectrum(g)), "kfac")
        norm = torch.linalg.matrix_norm(block)
        error = torch.linalg.matrix_norm(block - torch.kron(g, a)) / norm if norm > 0 else torch.tensor(np.nan)
        for key, value in {**exact, **kfac, "kfac_rel_error": float(error)}.items():
            rec.setdefault(key, []).append(value)
    out: dict[str, Any] = {key: np.array(values) for key, values in rec.items()}
    return {**out, **spectral_summary(eig_full, "full"), "eig_full": eig_full}


def probe_rows(data: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first min(n, N_train) training rows (inputs as float64) and their labels."""
    rows = slice(0, min(n, len(data.train.y)))
    return data.train.x[rows].double(), data.train.y[rows]


def run_fisher(cell: Cell, data: Dataset, models: dict[str, Network], device: torch.device) -> xr.Dataset:
    """The measurement: every checkpoint in `models` (name -> network) x every Fisher type of the cell."""
    tic, params = time.perf_counter(), cell[FisherParams]
    x, y = probe_rows(data, params.fisher_samples)
    kinds = list(params.fisher_types)
    results = {(name, kind): fisher_records(analysis_copy(net).to(device), x.to(device), y.to(device), kind)
               for name, net in models.items() for kind in kinds}

    def stack(key: str) -> np.ndarray:
        return np.stack([[results[name, kind][key] for kind in kinds] for name in models])

    first = next(iter(results.values()))
    dims = {0: (), 1: ("layer",), 2: ("layer", "p")}
    data_vars: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for key, value in first.items():
        if key == "eig_full":
            data_vars[key] = (("checkpoint", "fisher", "fisher_eigen"), stack(key))
        elif key.endswith("_full"):
            data_vars[key] = (("checkpoint", "fisher", *(("p",) if np.ndim(value) else ())), stack(key))
        else:
            data_vars[key] = (("checkpoint", "fisher", *dims[np.ndim(value)]), stack(key))
    ds = xr.Dataset(data_vars, coords={"checkpoint": np.array(list(models), dtype=object),
                                       "fisher": np.array(kinds, dtype=object), "p": np.asarray(P_LEVELS),
                                       "layer": np.arange(len(first["lmax_block"]))})
    for name in ("full", "block", "kfac"):
        ds[f"log10_kappa_{name}"] = log10_kappa(ds[f"kappa_{name}"])
        ds[f"log10_lmax_{name}"] = log10_positive(ds[f"lmax_{name}"])
    ds["kfac_lmax_ratio"] = ds["lmax_kfac"] / ds["lmax_block"]
    ds["log10_kfac_kappa_ratio"] = ds["log10_kappa_kfac"] - ds["log10_kappa_block"]
    ds["log10_kappa_gap"] = ds["log10_kappa_full"] - ds["log10_kappa_block"].max("layer")
    ds["fisher_params"] = first["eig_full"].size
    ds["fisher_rows"] = len(y)
    ds["fisher_seconds"] = time.perf_counter() - tic
    return ds
