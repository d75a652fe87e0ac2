"""Built-in training regimes (paper 001 ch. 6) and the variables the one training loop writes in every regime
(implementations: layerlab.training.loop, layerlab.training.regimes.layerwise, layerlab.training.regimes.robin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerlab.catalog.decision_heads import check_head
from layerlab.core.config import ConfigError
from layerlab.core.params import Section, param
from layerlab.core.registry import MODELS, register_regime

if TYPE_CHECKING:
    from layerlab.core.cell import Cell

RUN_VARIABLES = {  # written by layerlab.training.loop for every cell
    "loss": ("training loss on the mini-batch (CE, CE + CE*L_BE, or the output head's loss)", "nat"),
    "ce": ("cross-entropy on the mini-batch", "nat"),
    "lbe": ("batch-entropy loss L_BE (NaN without LBE)", "1"),
    "alpha": ("LBE target max(alpha_min, |alpha^l|) (NaN where not regularized)", "nat"),
    "batch_acc": ("accuracy on the training mini-batch", "1"),
    "test_acc_curve": ("test accuracy during training", "1"),
    "test_loss_curve": ("test cross-entropy during training", "nat"),
    "test_acc": ("final test accuracy", "1"),
    "test_error": ("final test error, 1 - test accuracy", "1"),
    "test_loss": ("final test cross-entropy", "nat"),
    "test_acc_last3": ("mean test accuracy of the last 3 evaluations", "1"),
    "train_acc": ("final accuracy on the whole training split", "1"),
    "train_loss": ("final cross-entropy on the whole training split", "nat"),
    "diverged": ("training hit a non-finite loss", "1"),
    "diverged_step": ("step of the first non-finite loss (-1: none)", "1"),
    "train_seconds": ("wall time of the training loop", "s"),
    "train_rows": ("training rows the batches are drawn from (after k-filtering)", "1"),
    "train_kept": ("fraction of the training split kept by k-filtering (1 without)", "1"),
    "k_filter_seconds": ("wall time of k-filtering, before training (not part of train_seconds)", "s"),
}

STAGED_VARIABLES = {  # what a staged regime means by the per-step variables, and what it adds
    "loss": ("training loss of the current stage's network on the mini-batch (CE)", "nat"),
    "ce": ("cross-entropy of the current stage's network on the mini-batch", "nat"),
    "batch_acc": ("accuracy of the current stage's network on the training mini-batch", "1"),
    "stage": ("layer-wise stage (window index) trained at this step", "1"),
    "test_acc_curve": ("test accuracy of the current stage's network (layer-wise) or the model", "1"),
    "test_loss_curve": ("test cross-entropy of the current stage's network (layer-wise) or the model", "nat"),
    "layer_test_acc": ("test accuracy of the decision head on this layer after its stage (layer-wise)", "1"),
    "layer_test_loss": ("test cross-entropy of the decision head on this layer after its stage", "nat"),
    "layer_lr": ("learning rate of the stage whose window ends at this layer", "1"),
    "layer_weight_decay": ("weight decay of the stage whose window ends at this layer", "1"),
    "peak_layer": ("layer (0-based) whose head has the highest test accuracy (NaN: none)", "1"),
    "peak_test_acc": ("highest per-layer head test accuracy (selected on the test set, as the thesis)", "1"),
    "layer_decision_convs": ("down-convs of the decision head on this layer (NaN: the model's output layer)", "1"),
    "layer_decision_channels": ("channels of the decision head's down-convs on this layer (NaN: none)", "1"),
    "layer_k_kept": ("partitionwise k_filter: fraction of the training rows the partition ending here trained on",
                     "1"),
    "search_relative_memory": ("relative memory of the heads fitted to memory_target (dry steps; NaN: no search)",
                               "1"),
}

ROBIN_VARIABLES = {  # round robin (Algorithm 4): a stage is one (round, layer)
    **STAGED_VARIABLES,
    "stage": ("round-robin stage trained at this step: round x layers + position in the round's order", "1"),
    "layer_test_acc": ("test accuracy of the decision head on this layer after its layer's last stage", "1"),
    "layer_test_loss": ("test cross-entropy of the decision head on this layer after its layer's last stage", "nat"),
    "layer_lr": ("learning rate of this layer's optimizer (lr x layer_lr_decay^layer)", "1"),
    "layer_weight_decay": ("weight decay of this layer's optimizer (weight_decay x layer_wd_growth^layer)", "1"),
    "robin_round": ("round-robin round (from 0) of the stage trained at this step", "1"),
    "robin_layer": ("hidden layer trained at this step (with its head; the last layer with the output layer)", "1"),
    "robin_order": ("layer order of each round (random robin: a seeded permutation per round)", "1"),
}


@dataclass(frozen=True)
class BackpropParams(Section):
    """backprop's own parameter."""

    freeze_weights: str = param(
        "", "paper 004's weight domination (Fig. 4): one digit per layer, output layer last; 0: that layer's "
        "Linear/Conv weight is never updated (its bias and BN gamma/beta still train); '': none", pattern="^[01]*$")


def check_staged(cell: Cell) -> None:
    """Layer-wise (DLL), segment-wise (DSL) and round-robin training split a plain stack into windows (round robin:
    single layers), with CE decision heads."""
    regime, model = cell.regime, MODELS[cell.model.model]
    training, k = regime.training, regime.segment_size
    if not model.stack:
        stacks = ", ".join(spec.name for spec in MODELS.values() if spec.stack)
        raise ConfigError(f"training '{training}' needs a plain stack of layers ({stacks}); model "
                          f"'{cell.model.model}' has residual/skip structure that a per-layer split would cut")
    if training not in ("segmentwise", "partitionwise") and k != 1:
        raise ConfigError(f"training '{training}' trains one layer per stage (segment_size 1, got {k}); use training "
                          f"'segmentwise' or 'partitionwise' for windows of several layers")
    if k > (n := model.hidden_layers(cell)):
        raise ConfigError(f"segment_size {k} exceeds the {n} hidden layers of model '{cell.model.model}'")
    if training == "partitionwise" and k >= n:
        for key, value in (("loss_filter", regime.loss_filter), ("k_filter", cell.run.k_filter)):
            if value:
                raise ConfigError(f"{key} {value} filters the batches of the upper partitions: it needs a "
                                  f"segment_size below the number of hidden layers (got segment_size {k})")
    if regime.loss_filter and training != "partitionwise":
        raise ConfigError(f"loss_filter {regime.loss_filter} filters the batches of the upper partitions by the "
                          f"first one's loss: it needs training 'partitionwise' (got training '{training}')")
    if cell.loss.loss != "ce":
        raise ConfigError(f"training '{training}' trains cross-entropy decision heads; loss '{cell.loss.loss}' is only "
                          f"available with backprop")
    if cell[BackpropParams].freeze_weights:
        raise ConfigError(f"freeze_weights (paper 004's weight domination) is an option of training 'backprop'; "
                          f"training '{training}' freezes layers by its stages")
    if regime.memory_target is not None and training in ("round_robin", "random_robin"):
        raise ConfigError(f"memory_target fits the heads of the layer-wise, segment-wise and partition-wise stages; "
                          f"training '{training}' keeps every layer's head resident (use layer_head and "
                          f"decision_convs / decision_channels directly)")
    check_head(cell)


register_regime("backprop", "layerlab.training.regimes.backprop:Backprop", k_filter="before", packs=True,
                parameters=BackpropParams)
for _name, _windows in (("layerwise", "single"), ("segmentwise", "sliding"), ("partitionwise", "partitions")):
    register_regime(_name, "layerlab.training.regimes.layerwise:Staged", variables=STAGED_VARIABLES, check=check_staged,
                    options={"windows": _windows}, k_filter="online" if _windows == "partitions" else None)
for _name, _random in (("round_robin", False), ("random_robin", True)):
    register_regime(_name, "layerlab.training.regimes.robin:Robin", variables=ROBIN_VARIABLES, check=check_staged,
                    options={"random": _random})
