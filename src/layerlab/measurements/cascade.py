"""Reconstruction-entropy cascade (paper 003): how much input information survives to each layer of an
untrained network, read off single-layer reconstruction nets.

For each hidden layer l a net c^l = tanh(Linear(N_l -> N_{l-1})) learns, with MSE and Adam, to map the frozen
network's activation z^l back to z^{l-1} (the true previous activation, the image for l = 1); all layers train
in the same pass over the data. For the paper's conv nets (models cascade_cnn, cascade_resnet) c^l mirrors each
conv of layer l, last first: ConvTranspose2d (same kernel and stride, channels swapped) + tanh + a crop back to
that conv's input map (two for a residual block); everything else is shared.
The cascade C^l = c^1 o ... o c^l reconstructs the input from layer l.
Per layer: the relative entropy between original and reconstruction (official code's normalisation: per-image
min-shift + 1e-12, sum to one; per-sample curves divided by their last value, median over samples) and the
reconstruction differential entropy (per-pixel Gaussian entropy across reconstructions). The cutoff l* is
where the relative entropy saturates within the relative tolerance eta; l*_S is the same rule applied to the
differential entropy S (App. A.2, the paper's second predictor; official code: rtol 0.005 on S itself).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import time

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F

from layerlab.catalog.measurements import CascadeParams
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.nets.layers import Network
from layerlab.training.optim import Batches

STD_FLOOR = 1e-30  # a pixel constant over all reconstructions would give S = -inf


def relative_entropy(original: torch.Tensor, reconstruction: torch.Tensor, offset: float = 1e-12) -> torch.Tensor:
    """KL(p || q) per sample, p and q the min-shifted, sum-normalised flattened images (float64)."""

    def pmf(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).double()
        x = x - x.min(dim=1, keepdim=True).values + offset
        return x / x.sum(dim=1, keepdim=True)

    p, q = pmf(original), pmf(reconstruction)
    return (p * (p / q).log()).sum(dim=1)


def differential_entropy(reconstructions: torch.Tensor) -> float:
    """S = mean over pixels of 1/2 ln(2 pi e sigma_ij^2), sigma_ij the unbiased std of pixel ij over the batch
    of reconstructions, each image first divided by its pixel sum (official code; float64)."""
    x = reconstructions.flatten(1).double()
    x = x / x.sum(dim=1, keepdim=True)
    std = x.std(dim=0).clamp(min=STD_FLOOR)
    return float((0.5 * math.log(2 * math.pi * math.e) + std.log()).mean())


def cutoff_depth(curve: np.ndarray, eta: float) -> int:
    """l* = 1 + max{l < L : |RE(l) - RE(L)| > eta |RE(L)|} with 1-based layers; l* = 1 if no layer differs.

    l* = L means the curve is still changing at the last layer: no saturation inside the network.
    """
    far = np.flatnonzero(np.abs(curve[:-1] - curve[-1]) > eta * abs(curve[-1]))
    return int(far[-1]) + 2 if far.size else 1


def make_cascade(sizes: list[int]) -> nn.ModuleList:
    """c^l = tanh(Linear(sizes[l] -> sizes[l-1])) for the layer widths `sizes` (input first)."""
    return nn.ModuleList(nn.Sequential(nn.Linear(b, a), nn.Tanh()) for a, b in itertools.pairwise(sizes))


class Crop(nn.Module):
    """Keep `size` rows and columns of a map starting at `offset` (both spatial dims)."""

    def __init__(self, offset: int, size: tuple[int, int]):
        super().__init__()
        self.offset, self.size = offset, tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o, (h, w) = self.offset, self.size
        return x[..., o : o + h, o : o + w]

    def extra_repr(self) -> str:
        return f"offset={self.offset}, size={self.size}"


def conv_reconstruction(conv: nn.Conv2d, size: tuple[int, int]) -> nn.Sequential:
    """Mirror of one conv whose input map had spatial `size`: tanh(ConvTranspose2d(C_out -> C_in, same kernel and
    stride)) cropped to `size`. The convs here are centred (same padding, or valid + circular pad k // 2), so
    output pixel i sees input pixel s i; the transposed conv puts its kernel centre for i at s i + k // 2: the crop
    starts there (the official code crops 1 at both ends, and 1 at the end only after a stride-2 conv, which
    shifts those reconstructions by one pixel)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    return nn.Sequential(nn.ConvTranspose2d(conv.out_channels, conv.in_channels, k, stride=s), nn.Tanh(),
                         Crop(k // 2, size))


def make_conv_cascade(model: Network, x: torch.Tensor) -> nn.ModuleList:
    """c^l for a conv net: one `conv_reconstruction` per Conv2d of hidden layer l, last conv first."""
    sizes: dict[nn.Module, tuple[int, int]] = {}

    def record(conv: nn.Module, inputs: tuple[torch.Tensor], _: torch.Tensor) -> None:
        sizes[conv] = (inputs[0].shape[-2], inputs[0].shape[-1])

    convs = [[m for m in layer.modules() if isinstance(m, nn.Conv2d)] for layer in model.layers]
    hooks = [m.register_forward_hook(record) for m in itertools.chain(*convs)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return nn.ModuleList(nn.Sequential(*(conv_reconstruction(m, sizes[m]) for m in reversed(layer_convs)))
                         for layer_convs in convs)


def reconstruct(cascade: nn.ModuleList, hidden: list[torch.Tensor]) -> torch.Tensor:
    """Reconstructions of the input from every layer, shape (layer, batch, *input shape)."""
    out = []
    for depth, h in enumerate(hidden, start=1):
        for c in reversed(cascade[:depth]):
            h = c(h)
        out.append(h)
    return torch.stack(out)


def run_cascade(cell: Cell, data: Dataset, networks: dict[str, Network], device: torch.device) -> xr.Dataset:
    """Train the cascade on the frozen untrained network (`networks["init"]`) and measure the per-layer
    reconstruction entropies."""
    start, params = time.perf_counter(), cell[CascadeParams]
    model = networks["init"].to(device).eval().requires_grad_(False)
    with torch.no_grad():
        hidden = model(data.train.x[:2])[1]
    conv = hidden[0].ndim == 4  # the conv nets' layers are all conv layers (config.check_cell)
    x_train = data.train.x if conv else data.train.x.flatten(1)
    torch.manual_seed(cell.run.seed)
    cascade = (make_conv_cascade(model, x_train[:2]) if conv
               else make_cascade([x_train.shape[1]] + [h.shape[1] for h in hidden])).to(device)
    optimizer = torch.optim.Adam(cascade.parameters(), lr=params.cascade_lr)  # separable losses: = one Adam/layer
    batch_size = min(params.cascade_batch_size, len(x_train))
    steps = max(1, math.ceil(params.cascade_epochs * len(x_train) / batch_size))
    generator = torch.Generator().manual_seed(cell.run.seed)
    for _, idx in zip(range(steps), Batches(len(x_train), batch_size, generator), strict=False):
        x = x_train[idx.to(device)]
        with torch.no_grad():
            targets = [x, *model(x)[1]]
        loss = functools.reduce(operator.add, (F.mse_loss(c(targets[i + 1]), targets[i])
                                               for i, c in enumerate(cascade)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = data.test.x[: params.cascade_eval_samples]
        recon = reconstruct(cascade, model(x)[1])  # (layer, sample, pixel)
        kl = torch.stack([relative_entropy(x, r) for r in recon]).cpu().numpy()  # (layer, sample)
    kl_curve = np.median(kl / kl[-1], axis=1)
    entropy = np.array([differential_entropy(r) for r in recon])
    seconds = time.perf_counter() - start
    depth = len(recon)
    n_shown = min(params.cascade_images, len(x))
    shown = recon[:, :n_shown].reshape(depth, n_shown, *x.shape[1:]).mean(2).cpu().numpy()  # channel mean
    ds = xr.Dataset(
        {
            "re_kl": ("layer", kl_curve),
            "re_kl_mean": ("layer", kl.mean(axis=1)),
            "re_diff_entropy": ("layer", entropy),
            "cutoff_depth": cutoff_depth(kl_curve, params.cutoff_eta),
            "cutoff_depth_diff_entropy": cutoff_depth(entropy, params.cutoff_eta_diff_entropy),
            "cascade_seconds": seconds,
            "reconstruction": (("layer", "image", "y", "x"), shown.astype(np.float32)),
            "original": (("image", "y", "x"), x[:n_shown].mean(1).cpu().numpy()),
        },
        coords={"layer": np.arange(depth)},
    )
    return ds
