"""Batch selections of the partition-wise regime (paper 001, Øland's thesis, Sec. 6.8): which examples of each
mini-batch an upper partition trains on. A selection maps (training-row indices, x, y, step t of the stage) to the
positions in the batch to keep (`layerlab.probes.base.Select`); `chain` applies several, each to what the previous
kept. Loss filtering (Sec. 6.8.4) drops the lowest-loss examples under the trained first partition; online
k-filtering (Sec. 6.8.2) keeps the rows whose partition inputs are not k-redundant (`layerlab.training.kfilter`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from layerlab.core.sections import RunParams
from layerlab.data.datasets import Split
from layerlab.training.kfilter import kept_rows
from layerlab.training.regimes.stage_nets import StageNet
from layerlab.training.stage import Select


@dataclass
class LossFilter:
    """The thesis's loss filtering (Sec. 6.8.4): from update `start` of a stage, each mini-batch loses the
    `fraction` of its examples with the lowest loss of the trained first partition (its layers and own head,
    frozen, eval mode) before it reaches the stage's partition."""

    net: StageNet  # frozen, eval mode
    fraction: float
    start: int

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        if t < self.start:
            return torch.arange(len(y), device=y.device)
        with torch.no_grad():
            losses = F.cross_entropy(self.net(x)[0], y, reduction="none")
        keep = torch.argsort(losses, descending=True, stable=True)[:len(y) - int(self.fraction * len(y))]
        return keep.sort().values  # the batch's own order


class KFilter:
    """Online k-filtering of an upper partition (the thesis's DPL, Sec. 6.8.2): at update `start` of the stage, the
    inputs of the partition (the frozen feednet's outputs) of every training row are k-filtered (`kept_rows`: within
    batches of `k_filter_batch` rows, k = `k_filter`), at most `k_filter_cap` of the rows removed (the first redundant
    ones in stored order); from then on each mini-batch keeps only its kept rows. Computed when first needed, so a
    resumed stage filters with its restored feednet."""

    def __init__(self, run: RunParams, cap: float, net: StageNet, data: Split, start: int):
        self.run, self.cap, self.net, self.data, self.start = run, cap, net, data, start
        self.keep: torch.Tensor | None = None

    def kept(self) -> torch.Tensor:
        """Bool per training row: kept by the filter."""
        if self.keep is None:
            x, y, chunk = self.data.x, self.data.y, self.run.batch_size
            z = torch.cat([self.net.features(x[i:i + chunk])[-1].flatten(1) for i in range(0, len(y), chunk)])
            keep = torch.zeros(len(y), dtype=torch.bool, device=y.device)
            keep[kept_rows(z, y, self.run.k_filter, self.run.k_filter_batch)] = True
            removed = torch.nonzero(~keep).flatten()
            keep[removed[int(self.cap * len(y)):]] = True
            self.keep = keep
        return self.keep

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        if t < self.start:
            return torch.arange(len(y), device=y.device)
        return torch.nonzero(self.kept()[idx]).flatten()


def chain(*selects: Select | None) -> Select | None:
    """The batch selections applied one after the other, each to what the previous kept (None: none)."""
    active = [select for select in selects if select is not None]
    if len(active) < 2:
        return active[0] if active else None

    def select(idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        keep = torch.arange(len(y), device=y.device)
        for one in active:
            keep = keep[one(idx[keep], x[keep], y[keep], t)]
        return keep
    return select
