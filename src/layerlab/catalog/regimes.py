"""Built-in training regimes (paper 001 ch. 6) and the variables the one training loop writes in every regime
(implementations: layerlab.training.loop, layerlab.training.regimes.layerwise, layerlab.training.regimes.robin)."""

from __future__ import annotations

from layerlab.catalog.decision_heads import check_head
from layerlab.core.config import ConfigError
from layerlab.core.registry import MODELS, register_regime

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



def check_staged(cell: dict) -> None:
    """Layer-wise (DLL), segment-wise (DSL) and round-robin training split a plain stack into windows (round robin:
    single layers), with CE decision heads."""
    regime, model = cell["training"], MODELS[cell["model"]]
    if not model.stack:
        stacks = ", ".join(spec.name for spec in MODELS.values() if spec.stack)
        raise ConfigError(f"training '{regime}' needs a plain stack of layers ({stacks}); model "
                          f"'{cell['model']}' has residual/skip structure that a per-layer split would cut")
    if regime not in ("segmentwise", "partitionwise") and cell["segment_size"] != 1:
        raise ConfigError(f"training '{regime}' trains one layer per stage (segment_size 1, got "
                          f"{cell['segment_size']}); use training 'segmentwise' or 'partitionwise' for windows of "
                          f"several layers")
    if cell["segment_size"] > (n := model.hidden_layers(cell)):
        raise ConfigError(f"segment_size {cell['segment_size']} exceeds the {n} hidden layers of model "
                          f"'{cell['model']}'")
    if regime == "partitionwise" and cell["segment_size"] >= model.hidden_layers(cell):
        for key in ("loss_filter", "k_filter"):
            if cell[key]:
                raise ConfigError(f"{key} {cell[key]} filters the batches of the upper partitions: it needs a "
                                  f"segment_size below the number of hidden layers (got segment_size "
                                  f"{cell['segment_size']})")
    if cell["loss_filter"] and regime != "partitionwise":
        raise ConfigError(f"loss_filter {cell['loss_filter']} filters the batches of the upper partitions by the "
                          f"first one's loss: it needs training 'partitionwise' (got training '{regime}')")
    if cell["loss"] != "ce":
        raise ConfigError(f"training '{regime}' trains cross-entropy decision heads; loss '{cell['loss']}' is only "
                          f"available with backprop")
    if cell["freeze_weights"]:
        raise ConfigError(f"freeze_weights (paper 004's weight domination) is an option of training 'backprop'; "
                          f"training '{regime}' freezes layers by its stages")
    if cell["memory_target"] is not None and regime in ("round_robin", "random_robin"):
        raise ConfigError(f"memory_target fits the heads of the layer-wise, segment-wise and partition-wise stages; "
                          f"training '{regime}' keeps every layer's head resident (use layer_head and "
                          f"decision_convs / decision_channels directly)")
    check_head(cell)


register_regime("backprop", "layerlab.training.regimes.backprop:Backprop", k_filter="before", packs=True)
for _name, _windows in (("layerwise", "single"), ("segmentwise", "sliding"), ("partitionwise", "partitions")):
    register_regime(_name, "layerlab.training.regimes.layerwise:Staged", variables=STAGED_VARIABLES, check=check_staged,
                    options={"windows": _windows}, k_filter="online" if _windows == "partitions" else None)
for _name, _random in (("round_robin", False), ("random_robin", True)):
    register_regime(_name, "layerlab.training.regimes.robin:Robin", variables=ROBIN_VARIABLES, check=check_staged,
                    options={"random": _random})
