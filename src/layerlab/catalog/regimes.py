"""Built-in training regimes (paper 001 ch. 6) and the variables the one training loop writes in every regime
(implementations: layerlab.train, layerlab.layerwise)."""

from __future__ import annotations

from layerlab.catalog.heads import check_head
from layerlab.config import ConfigError
from layerlab.registry import MODELS, register_regime

RUN_VARIABLES = {  # written by layerlab.train for every cell
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
    "search_relative_memory": ("relative memory of the heads fitted to memory_target (dry steps; NaN: no search)",
                               "1"),
}



def check_staged(cell: dict) -> None:
    """Layer-wise (DLL) and segment-wise (DSL) training split a plain stack into windows, with CE decision heads."""
    regime, model = cell["training"], MODELS[cell["model"]]
    if not model.stack:
        stacks = ", ".join(spec.name for spec in MODELS.values() if spec.stack)
        raise ConfigError(f"training '{regime}' needs a plain stack of layers ({stacks}); model "
                          f"'{cell['model']}' has residual/skip structure that a per-layer split would cut")
    if regime == "layerwise" and cell["segment_size"] != 1:
        raise ConfigError(f"training 'layerwise' trains one layer per stage (segment_size 1, got "
                          f"{cell['segment_size']}); use training 'segmentwise' for windows of several layers")
    if cell["segment_size"] > (n := model.hidden_layers(cell)):
        raise ConfigError(f"segment_size {cell['segment_size']} exceeds the {n} hidden layers of model "
                          f"'{cell['model']}'")
    if cell["loss"] != "ce":
        raise ConfigError(f"training '{regime}' trains cross-entropy decision heads; loss '{cell['loss']}' is only "
                          f"available with backprop")
    if cell["freeze_weights"]:
        raise ConfigError(f"freeze_weights (paper 004's weight domination) is an option of training 'backprop'; "
                          f"training '{regime}' freezes layers by its stages")
    check_head(cell)


register_regime("backprop", "layerlab.train:Backprop")
register_regime("layerwise", "layerlab.layerwise:Staged", variables=STAGED_VARIABLES, check=check_staged)
register_regime("segmentwise", "layerlab.layerwise:Staged", variables=STAGED_VARIABLES, check=check_staged)
