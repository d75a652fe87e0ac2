"""k-filtering (paper 001, Øland's thesis §5.4, Def. 8): before training, drop every training row whose k nearest
neighbours (Euclidean, on the flattened network inputs) all share its label; the cell then trains on the kept rows.

The thesis "runs KNN on large mini-batches of the data": `k_filter_batch` cuts the training split, in its stored
order, into consecutive batches of that many rows and looks for each row's neighbours within its batch (6,144, the
batch of the thesis's online filter, §6.8.2, is the default); `k_filter_batch: 0` looks in the whole split (exact).
A last batch of at most k rows has no k neighbours and is kept. The inputs are the network's: with the default
`input_scaling: standardize` (one mean and std for all pixels) the neighbours are those of the raw pixels. The
distances are float64 (`redundant`, also the k-redundancy's criterion, `layerlab.measurements.representation`), so the
kept set depends on the data and k only, never on the seed or the training RNG.
"""

from __future__ import annotations

import torch

KNN_CHUNK = 1024  # rows of the distance matrix computed at once


def redundant(z: torch.Tensor, labels: torch.Tensor, k: int, chunk: int = KNN_CHUNK) -> torch.Tensor:
    """Def. 8: which rows are redundant, i.e. their k nearest other rows (Euclidean, float64) all share their label
    (a bool per row; the distance matrix `chunk` rows at a time)."""
    m = len(z)
    if not 0 < k < m:
        raise ValueError(f"k-redundancy needs 0 < k < samples (got k={k}, {m} samples)")
    z = z.double()
    sq = (z * z).sum(1)
    out = torch.empty(m, dtype=torch.bool, device=z.device)
    for start in range(0, m, chunk):
        rows = torch.arange(start, min(start + chunk, m), device=z.device)
        dist = sq[rows, None] + sq[None, :] - 2 * z[rows] @ z.T
        dist[torch.arange(len(rows), device=z.device), rows] = torch.inf  # not its own neighbour
        neighbours = dist.topk(k, dim=1, largest=False).indices
        out[rows] = (labels[neighbours] == labels[rows, None]).all(1)
    return out


def kept_rows(x: torch.Tensor, y: torch.Tensor, k: int, batch: int = 0) -> torch.Tensor:
    """Indices (ascending) of the rows of (x, y) that k-filtering keeps: not redundant within their batch of
    `batch` consecutive rows (0: among all rows)."""
    n, size = len(y), batch or len(y)
    z = x.flatten(1)
    keep = torch.ones(n, dtype=torch.bool, device=y.device)
    for start in range(0, n, size):
        stop = min(start + size, n)
        if stop - start > k:
            keep[start:stop] = ~redundant(z[start:stop], y[start:stop], k)
    return torch.nonzero(keep).flatten()
