"""Training-batch augmentation (paper 004's CIFAR recipe, fb.resnet.torch): random horizontal flip, then a random
crop of the original size after reflection padding, drawn per image from a seeded generator."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each image of the (N, C, H, W) batch flipped left-right with probability 1/2 and cropped back to H x W
    at a uniform offset from its `pad`-pixel reflection padding."""
    n, _, h, w = x.shape
    flip, dy, dx = (torch.randint(0, k, (n,), generator=generator).to(x.device) for k in (2, 2 * pad + 1, 2 * pad + 1))
    x = torch.where(flip.bool()[:, None, None, None], x.flip(3), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
