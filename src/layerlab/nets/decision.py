"""Decision heads of the staged regimes (paper 001, Øland's thesis, ch. 6, Sec. 6.2.2, "decision-block vs
decision-layer"), declared in layerlab.catalog.decision_heads.

A fresh head sits on the output of each stage's top layer and is discarded after the stage. `linear` flattens the
features into one Linear classifier; on a wide conv map that classifier is "needlessly expensive, due to a quadratic
blow-up in the number of parameters". A *decision block* first shrinks the map: `decision_convs` "down-convs"
(3x3, stride 2, padding 1, `decision_channels` channels, the cell's activation; as many as fit, down to 1x1), then a
"down-pool" (adaptive average pool to at most `decision_pool` x `decision_pool`), then the Linear classifier. On a
feature vector it is the Linear classifier alone. `search_space` lists the configurations the memory search of
layerlab.training.regimes.layerwise (`memory_target`) chooses from, in families of non-decreasing memory: no down-conv;
then for each n in 1..decision_convs (the thesis's Max. DC) n down-convs of 1..decision_channels channels (more
channels: more activations and parameters in every part, so the search bisects each family).
"""

from __future__ import annotations

import math
from dataclasses import replace

from torch import nn

from layerlab.catalog.decision_heads import DecisionBlockParams
from layerlab.core.sections import ModelParams
from layerlab.nets.models import ACTIVATIONS


def linear_head(shape: tuple[int, ...], n_classes: int, model: ModelParams, params: None = None) -> nn.Module:
    """Flatten + Linear (the thesis's single decision layer)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), n_classes))


def pool_linear_head(shape: tuple[int, ...], n_classes: int, model: ModelParams, params: None = None) -> nn.Module:
    """Global average pool of a conv map + Linear (a plain Linear on a vector)."""
    if len(shape) != 3:
        return linear_head(shape, n_classes, model)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(shape[0], n_classes))


def down_convs(shape: tuple[int, ...], most: int) -> int:
    """How many of `most` stride-2 down-convs a (C, H, W) map takes before it is 1x1 (0 for a vector)."""
    if len(shape) != 3:
        return 0
    h, w, n = shape[1], shape[2], 0
    while n < most and min(h, w) > 1:
        h, w, n = (h + 1) // 2, (w + 1) // 2, n + 1
    return n


def decision_block(shape: tuple[int, ...], n_classes: int, model: ModelParams,
                   params: DecisionBlockParams) -> nn.Module:
    """Down-convs, down-pool, Linear classifier (see the module docstring)."""
    if len(shape) != 3:
        return linear_head(shape, n_classes, model)
    (c, h, w), modules = shape, []
    for _ in range(down_convs(shape, params.decision_convs)):
        modules += [nn.Conv2d(c, params.decision_channels, 3, stride=2, padding=1), ACTIVATIONS[model.activation]()]
        c, h, w = params.decision_channels, (h + 1) // 2, (w + 1) // 2
    if (p := params.decision_pool) and max(h, w) > p:
        h, w = min(h, p), min(w, p)
        modules.append(nn.AdaptiveAvgPool2d((h, w)))
    return nn.Sequential(*modules, nn.Flatten(), nn.Linear(c * h * w, n_classes))


def search_space(params: DecisionBlockParams, shape: tuple[int, ...]) -> list[list[DecisionBlockParams]]:
    """The decision blocks the memory search may choose on features of `shape`, in families whose memory does not
    decrease along them."""
    return [[replace(params, decision_convs=0)]] + [
        [replace(params, decision_convs=n, decision_channels=c) for c in range(1, params.decision_channels + 1)]
        for n in range(1, down_convs(shape, params.decision_convs) + 1)]


def head_config(head: nn.Module) -> tuple[int, float]:
    """(down-convs, their channels; NaN without) of a built head."""
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    return len(convs), float(convs[0].out_channels) if convs else float("nan")
