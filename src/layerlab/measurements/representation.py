"""Per-layer representation measures (paper 001, Øland's thesis ch. 5): how linearly separable and how
class-pure each layer's representation of a fixed probe subset is, for the untrained and the trained network.

Representations (`rep_layer`): 0 = the input X (flattened), 1..L = the post-activation output Z_i of each hidden
layer, L + 1 = the logits. Conv feature maps are globally average-pooled (`representation_conv: pool`, the seed
notes' recommendation) or flattened; the input is always flattened (raw pixels, as in the thesis's pre-filtering).

- LSD (Eq. 5.3): LSD_i = 1/m ||Y - A_i A_i^+ Y||_F^2 with Y one-hot and A_i = [Z_i, 1] (bias column appended), the
  residual of a least-squares linear probe, solved in float64 (`torch.linalg.lstsq`, driver gelsd: the minimum-norm
  solution, i.e. the Moore-Penrose pseudoinverse). `lsd_train` is the fit's own residual on the probe subset;
  `lsd_heldout` applies the same fitted map to as many held-out (test) rows. Also the probe's argmax accuracy.
- k-redundancy (Def. 8): the fraction of probe samples whose k nearest neighbours (Euclidean, the sample itself
  excluded) all have its label.
- Selection entropy H(Y|Z_i) (Sec. 5.5.4, Fig. 5.21): per feature j the class histogram of its selection S_+(z_j)
  (samples with pre-activation > 0, i.e. ReLU output > 0), its entropy in bits, averaged over the layer's features.
  Features with an empty selection are undefined and skipped (`selection_skipped` = their fraction). Defined for
  fully connected ReLU hidden layers only (NaN for X, the logits, conv maps and activations without a flat region).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import xarray as xr
from torch.nn import functional as F

from layerlab.catalog.measurements import REPRESENTATION_PER_LAYER as PER_LAYER
from layerlab.catalog.measurements import RepresentationParams
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.training.kfilter import KNN_CHUNK, redundant
from layerlab.training.optim import EVAL_BATCH

CHECKPOINTS = ("init", "final")


def balanced_subset(labels: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Sorted indices of min(m, n) rows: m // C of every class (all of a smaller class), topped up to m with the
    remaining rows, both in one seeded random order."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    quota = m // len(np.unique(labels))
    chosen = np.concatenate([perm[labels[perm] == c][:quota] for c in np.unique(labels)])
    rest = perm[~np.isin(perm, chosen)]
    return np.sort(np.concatenate([chosen, rest[: min(m, len(labels)) - len(chosen)]]))


def with_bias(z: torch.Tensor) -> torch.Tensor:
    """[Z, 1] in float64 on the CPU (LAPACK's gelsd)."""
    z = z.detach().to("cpu", torch.float64)
    return torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1)


def linear_probe(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares map B of [Z, 1] B ~ targets (float64, so [Z, 1] B = A A^+ targets)."""
    return torch.linalg.lstsq(with_bias(z), targets.to("cpu", torch.float64), driver="gelsd").solution


def lsd(z: torch.Tensor, labels: torch.Tensor, b: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """(1/m ||Y - [Z, 1] B||_F^2 with one-hot Y, accuracy of argmax [Z, 1] B) for the fitted map B."""
    labels = labels.cpu()
    pred = with_bias(z) @ b
    residual = F.one_hot(labels, n_classes).double() - pred
    return float((residual**2).sum() / len(labels)), float((pred.argmax(1) == labels).double().mean())


def k_redundancy(z: torch.Tensor, labels: torch.Tensor, k: int, chunk: int = KNN_CHUNK) -> float:
    """Fraction of rows whose k nearest other rows (Euclidean, float64) all share their label."""
    return float(redundant(z, labels, k, chunk).double().mean())


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of each column of a (class, feature) count matrix (0 log 0 = 0)."""
    p = counts / counts.sum(0, keepdim=True)
    return -(p * torch.where(p > 0, p.log2(), 0.0)).sum(0)


def selection_entropy(z: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """(mean over features of H(Y | S_+(z_j)) in bits, fraction of features skipped for an empty selection)."""
    counts = F.one_hot(labels, n_classes).double().T @ (z > 0).double()  # (class, feature) selection histograms
    selected = counts.sum(0) > 0
    h = entropy_bits(counts[:, selected])
    return (float(h.mean()) if selected.any() else float("nan")), float(1 - selected.double().mean())


def as_matrix(h: torch.Tensor, conv: str) -> torch.Tensor:
    """A (sample, feature) matrix: conv maps (N, C, H, W) pooled over space (`pool`) or flattened."""
    return h.mean((2, 3)) if h.ndim == 4 and conv == "pool" else h.flatten(1)


@torch.no_grad()
def representations(model: Network, x: torch.Tensor, conv: str) -> tuple[list[torch.Tensor], list[bool]]:
    """[X, Z_1, ..., Z_L, logits] of the rows `x` as (sample, feature) matrices (eval mode: BatchNorm uses its
    running statistics, dropout is off), and which of them are fully connected hidden layers."""
    model.eval()
    parts = []
    for i in range(0, len(x), EVAL_BATCH):
        logits, hidden = model(x[i : i + EVAL_BATCH])
        parts.append([x[i : i + EVAL_BATCH].flatten(1), *(as_matrix(h, conv) for h in hidden), logits.flatten(1)])
    dense = [False, *(h.ndim == 2 for h in hidden), False]
    return [torch.cat(p) for p in zip(*parts, strict=True)], dense


def measure(model: Network, data: Dataset, train_rows: torch.Tensor, heldout_rows: torch.Tensor,
            params: RepresentationParams, activation: str) -> dict[str, np.ndarray]:
    """Every per-layer measure of one checkpoint of a network with `activation` (NaN for a non-finite
    representation, e.g. a diverged net)."""
    y_train, y_test = data.train.y[train_rows], data.test.y[heldout_rows]
    reps, dense = representations(model, data.train.x[train_rows], params.representation_conv)
    held, _ = representations(model, data.test.x[heldout_rows], params.representation_conv)
    out = {name: np.full(len(reps), np.nan) for name in PER_LAYER}
    for i, (z, z_held) in enumerate(zip(reps, held, strict=True)):
        if not (torch.isfinite(z).all() and torch.isfinite(z_held).all()):
            continue
        b = linear_probe(z, F.one_hot(y_train, data.n_classes))
        out["lsd_train"][i], out["probe_acc_train"][i] = lsd(z, y_train, b, data.n_classes)
        out["lsd_heldout"][i], out["probe_acc_heldout"][i] = lsd(z_held, y_test, b, data.n_classes)
        out["k_redundancy"][i] = k_redundancy(z, y_train, params.representation_k)
        if dense[i] and activation == "relu":
            out["selection_entropy"][i], out["selection_skipped"][i] = selection_entropy(z, y_train, data.n_classes)
    out["rep_features"] = np.array([z.shape[1] for z in reps])
    return out


def probe_rows(params: RepresentationParams, seed: int, data: Dataset,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe subsets: class-balanced rows of the training and of the test split, seeded by `seed`."""
    m, k = params.representation_samples, params.representation_k
    train_rows, heldout_rows = (
        torch.from_numpy(balanced_subset(split.y.cpu().numpy(), m, seed)).to(device)
        for split in (data.train, data.test)
    )
    if k >= len(train_rows):
        raise ValueError(f"representation_k ({k}) must be smaller than the probe subset ({len(train_rows)} "
                         f"training rows available)")
    return train_rows, heldout_rows


def run_representation(cell: Cell, data: Dataset, models: dict[str, Network],
                       device: torch.device) -> xr.Dataset:
    """The measures of every checkpoint in `models` (name -> network) on the cell's probe subsets."""
    start, params = time.perf_counter(), cell[RepresentationParams]
    train_rows, heldout_rows = probe_rows(params, cell.run.seed, data, device)
    results = {name: measure(net.to(device), data, train_rows, heldout_rows, params, cell.model.activation)
               for name, net in models.items()}
    first = next(iter(results.values()))
    label_counts = torch.bincount(data.train.y[train_rows].cpu(), minlength=data.n_classes).double()
    ds = xr.Dataset(
        {
            **{v: (("checkpoint", "rep_layer"), np.stack([r[v] for r in results.values()])) for v in PER_LAYER},
            "rep_features": ("rep_layer", first["rep_features"]),
            "rep_label_entropy": float(entropy_bits(label_counts[:, None])[0]),
            "rep_samples": len(train_rows),
            "rep_heldout_samples": len(heldout_rows),
            "representation_seconds": time.perf_counter() - start,
        },
        coords={"checkpoint": np.array(list(results), dtype=object), "rep_layer": np.arange(len(first["lsd_train"]))},
    )
    ds["rep_layer"].attrs.update(long_name="representation: 0 = input X, 1..L = hidden layers, L + 1 = logits")
    return ds
