"""Losses' config: paper 000's LBE and paper 001 chapter 4's output heads (gradient amplification): targets and
constraints, torch-free so the Snakefile can check configs before any job. The losses are in
`layerlab.training.losses`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerlab.core.config import ConfigError
from layerlab.core.sections import LossParams

if TYPE_CHECKING:
    from layerlab.core.cell import Cell

HEADS = ("mse", "sigmoid", "tanh", "exp_ga", "pow3_ga")
DEFAULT_TARGETS = {  # (off, on): thesis / seed-notes values; the cell's `target_off`/`target_on` override
    "mse": (0.0, 1.0), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "exp_ga": (0.0, 16.0), "pow3_ga": (0.0, 10.0),
}
# targets outside the head's range make its loss unbounded below (sigmoid, tanh: t outside act's range; exp_ga: t < 0)
TARGET_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "exp_ga": (0.0, float("inf"))}


def head_targets(loss: LossParams) -> tuple[float, float]:
    """The (off, on) target values of the output head `loss.loss`."""
    off, on = DEFAULT_TARGETS[loss.loss]
    return (off if loss.target_off is None else loss.target_off, on if loss.target_on is None else loss.target_on)


def check_loss(cell: Cell) -> None:
    """LBE on the middle layers needs three of them; targets belong to the output heads and must lie in the head's
    range, the true class's above the others'."""
    loss = cell.loss
    if loss.loss == "ce_lbe" and loss.lbe_layers == "middle" and cell.model.depth < 3:
        raise ConfigError(f"loss 'ce_lbe' with lbe_layers 'middle' needs depth >= 3 (got depth {cell.model.depth})")
    if loss.loss not in HEADS:
        if loss.target_off is not None or loss.target_on is not None:
            raise ConfigError(f"target_off/target_on apply to the output heads {', '.join(HEADS)}, "
                              f"not to loss '{loss.loss}'")
        return
    off, on = head_targets(loss)
    if not on > off:
        raise ConfigError(f"loss '{loss.loss}' needs target_on > target_off (got {on} <= {off})")
    low, high = TARGET_RANGES.get(loss.loss, (-float("inf"), float("inf")))
    if not (low <= off and on <= high):
        raise ConfigError(f"loss '{loss.loss}' needs targets in [{low}, {high}] (got {off}, {on})")
