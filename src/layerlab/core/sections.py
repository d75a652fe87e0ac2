"""The cell's own sections: data, model, loss, optimizer, run and regime. Each plug-in declares the section of its
own parameters beside its declaration (layerlab.catalog); `layerlab.core.cell.Cell` holds them all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from layerlab.core.params import Section, param


@dataclass(frozen=True)
class DataParams(Section):
    """How the cell reads its dataset: which one, the subsets, the scaling and the image transforms (what loads it
    once for every cell that reads it the same way)."""

    dataset: str = param("digits")
    train_subset: int | None = param(None, "first N training examples", minimum=2)
    test_subset: int | None = param(None, "first N test examples", minimum=1)
    input_scaling: Literal["standardize", "standardize_channels", "unit"] = param(
        "standardize", "standardize: one mean and std over all training pixels; standardize_channels: per colour "
        "channel (paper 004's CIFAR recipe); unit: pixels in [0, 1] (paper 003)")
    input_pool: int = param(
        1, "average-pool images by this factor before scaling (paper 004's 14x14 FashionMNIST: 2)", minimum=1)
    input_crop: int = param(
        0, "centre crop of this many pixels per side, before input_resize and input_pool (paper 004's 12x12 MNIST: "
        "20); 0: none", minimum=0)
    input_resize: int = param(
        0, "resize to this many pixels per side (antialiased bilinear) after input_crop, before input_pool (paper "
        "004's 12x12 MNIST: 12); 0: none", minimum=0)

@dataclass(frozen=True)
class ModelParams(Section):
    """The network: its model plug-in (whose own section holds the rest), depth, width, activation,
    initialisation and BatchNorm."""

    model: str = param(
        "fnn", "cnn_3c3d, all_cnn_c: paper 002's smaller and deeper CNN (fixed depth 5 and 8, no `width`); resnet, "
        "preresnet: paper 004's CIFAR ResNet (post-activation blocks) and PreResNet (type-A shortcuts); cascade_cnn, "
        "cascade_resnet: paper 003's CNN and ResNet (conv stem, then circular-padded valid convs or residual blocks x "
        "-> act(b(x) + x) of two convs)")
    depth: int = param(
        10, "number of hidden layers (fnn, cnn; cascade_cnn/resnet: stem convs + body layers or blocks); resnet, "
        "preresnet: the depth 6n + 2 (depth - 1 hidden convs)", minimum=1)
    width: int = param(256, "units (fnn) or channels (cnn, resnet's first stage)", minimum=1)
    activation: Literal["relu", "tanh", "linear"] = param("relu")
    init: Literal["torch_default", "he_normal", "he_fan_out", "gaussian", "xavier_normal"] = param(
        "torch_default", "he_fan_out: convs N(0, 2/fan_out), Linear PyTorch's default with zero bias (paper 004 "
        "ResNet)", per_model=True)
    sigma_w2: float = param(1.0, "gaussian init: Var(W) = sigma_w2/fan_in", per_model=True, exclusiveMinimum=0)
    sigma_b2: float = param(0.0, "gaussian init: Var(b)", per_model=True, minimum=0)
    bn_variant: Literal["none", "bn", "bn_gamma", "bn_beta", "bn_gamma_beta"] = param(
        "none", "BatchNorm before each hidden activation: none, normalization only (bn), + learnable gamma and/or "
        "beta; an ablated parameter is frozen at gamma = 1, beta = 0")
    bn_last_layer: bool = param(False, "also a BatchNorm on the output layer (needs a bn_variant)")

@dataclass(frozen=True)
class LossParams(Section):
    """The training loss: cross-entropy, LBE (paper 000) or an output head of paper 001 ch. 4."""

    loss: Literal["ce", "ce_lbe", "mse", "sigmoid", "tanh", "exp_ga", "pow3_ga"] = param(
        "ce", "ce: softmax + cross-entropy; ce_lbe: + LBE (paper 000); output heads of paper 001 ch. 4 on the raw "
        "logits x, each with the canonical delta dL/dx = act(x) - t (mean over the batch, sum over classes): mse "
        "(linear), sigmoid, tanh, exp_ga (alpha e^x, sparse CE), pow3_ga (alpha x^3 + beta, negative-correlation "
        "loss); prediction = argmax x", per_model=True)
    target_off: float | None = param(
        None, "output heads: target of the wrong classes; null: the head's default (tanh -1, others 0)", per_model=True)
    target_on: float | None = param(
        None, "output heads: target of the true class; null: the head's default (exp_ga 16, pow3_ga 10, others 1)",
        per_model=True)
    exp_alpha: float = param(0.1, "exp_ga: y = alpha e^x", per_model=True, exclusiveMinimum=0)
    pow3_alpha: float = param(0.001, "pow3_ga: y = alpha x^3 + beta", per_model=True, exclusiveMinimum=0)
    pow3_beta: float = param(0.4, "pow3_ga: y = alpha x^3 + beta (thesis tables: 0)", per_model=True, minimum=0)
    lbe_alpha: float = param(0.5, "initial per-layer target alpha", per_model=True)
    lbe_alpha_min: float = param(0.2, per_model=True, minimum=0)
    lbe_beta: float = param(0.1, per_model=True, minimum=0)
    lbe_layers: Literal["middle", "all"] = param(
        "middle", "middle: hidden layers 2..L-1 (official FNN code)", per_model=True)
    entropy_constant: Literal["pi_e", "two_pi_e"] = param(
        "pi_e", "pi_e: official code; two_pi_e: paper Eq. 2", per_model=True)

@dataclass(frozen=True)
class OptimizerParams(Section):
    """The optimizer and its schedule (the staged regimes scale lr and weight decay per stage)."""

    optimizer: Literal["adam", "sgd"] = param("adam")
    lr: float = param(0.0001, per_model=True, exclusiveMinimum=0)
    momentum: float = param(0.0, per_model=True, minimum=0)
    nesterov: bool = param(False, "sgd: Nesterov momentum (paper 004's CIFAR recipe)")
    lr_milestones: tuple[int, ...] = param(
        (), "steps at which the learning rate is multiplied by 0.1", per_model=True, items={"minimum": 1})
    weight_decay: float = param(0.0, per_model=True, minimum=0)
    weight_decay_params: Literal["all", "weights"] = param(
        "all", "weights: L2 on Linear/Conv weights only, not on biases, gamma, beta (paper 002)")

@dataclass(frozen=True)
class RunParams(Section):
    """The training run: batches (size, augmentation, k-filtered rows), updates, logging and the seed."""

    batch_size: int = param(128, minimum=2)
    steps: int = param(1000, per_model=True, minimum=1)
    log_every: int = param(50, per_model=True, minimum=1)
    eval_every: int = param(250, per_model=True, minimum=1)
    seed: int = param(0, per_model=True, minimum=0)
    augment: Literal["none", "crop_flip"] = param(
        "none", "crop_flip: random left-right flip and crop after 4-pixel reflection padding (paper 004)",
        per_model=True)
    k_filter: int = param(
        0, "paper 001 ch. 5 k-filtering (Def. 8): k > 0 drops, before training, every training row whose k nearest "
        "neighbours (Euclidean, flattened inputs) share its label, and trains on the kept rows (train_kept, "
        "train_rows); 0: off. Backprop; partitionwise: online, each upper partition filters the rows by its own inputs"
        " (the frozen feednet's outputs, Sec. 6.8.2; layer_k_kept)", per_model=True, minimum=0)
    k_filter_batch: int = param(
        6144, "k-filtering looks for neighbours within consecutive batches of this many training rows (the thesis's "
        "large mini-batches; 6,144: its online filter's batch); 0: the whole split (exact)", per_model=True, minimum=0)

@dataclass(frozen=True)
class RegimeParams(Section):
    """The training regime (`training`, a plug-in) and the staged regimes' keys (ignored under backprop): stages,
    per-stage schedules, dropouts, decision heads, memory target, partition filters."""

    training: str = param(
        "backprop", "backprop: the whole network at once; layerwise: one hidden layer at a time bottom-up with a "
        "temporary decision head, lower layers frozen (DLL, Algorithm 3); segmentwise: sliding windows of segment_size"
        " layers with overlap segment_size - 1 (DSL); partitionwise: consecutive partitions of segment_size layers "
        "without overlap, bottom-up (DPL, Sec. 6.8; the thesis: lr and wd x 0.5^i, i.e. layer_lr_decay and "
        "layer_wd_growth 0.5); round_robin / random_robin: `rounds` rounds over the layers, bottom-up / in a seeded "
        "random order per round, each layer with its own persistent head and optimizer and the current lower layers "
        "frozen (Algorithm 4)")
    segment_size: int = param(
        1, "segmentwise / partitionwise: layers trained together per stage (1 = layerwise); <= hidden layers",
        minimum=1)
    layer_steps: int | None = param(
        None, "layerwise/segmentwise: updates per stage; round_robin/random_robin: updates of each layer per round "
        "(the thesis's N_epochs); null: `steps` per stage", minimum=1)
    rounds: int = param(
        4, "round_robin/random_robin: rounds over all layers (the thesis's N_rounds); each layer gets rounds x "
        "layer_steps updates. 1 with round_robin: layer-wise training", minimum=1)
    layer_lr_decay: float = param(
        1.0, "stage i (from 0; round robin: layer i) uses lr x layer_lr_decay^i (thesis Table 6.3: 0.8)",
        per_model=True, exclusiveMinimum=0)
    layer_wd_growth: float = param(
        1.0, "stage i uses weight_decay x layer_wd_growth^i (thesis Table 6.3: 1.15)",
        per_model=True, exclusiveMinimum=0)
    input_dropout: float = param(
        0.0, "forward dropout p_0: inverted elementwise dropout on the (frozen) input of the trained window, p = p_0 x"
        " input_dropout_decay^epoch within the stage (round robin: epoch of the layer's updates over all rounds)",
        per_model=True, minimum=0, exclusiveMaximum=1)
    input_dropout_decay: float = param(
        0.95, "per-epoch decay of input_dropout (thesis: 0.95)", per_model=True, minimum=0, maximum=1)
    grad_dropout: float = param(
        0.0, "backward dropout p_g: inverted elementwise dropout on dL/dh flowing from the decision head into the "
        "trained window (forward untouched)", per_model=True, minimum=0, exclusiveMaximum=1)
    layer_head: str = param(
        "linear", "temporary decision head (layerlab.core.registry.DECISION_HEADS): flatten + Linear; (conv maps) "
        "global average pool + Linear; decision_block: decision_convs down-convs + down-pool + Linear (thesis Sec. "
        "6.2.2). The last stage uses the network's own output layer")
    memory_target: float | None = param(
        None, "search each stage's head (decision_block: 0..decision_convs down-convs of 1..decision_channels "
        "channels) for the largest tracked peak memory of one step within (memory_target + memory_tolerance) x "
        "backprop's (thesis Table 6.3: 0.3 +- 0.005), by dry steps, no training; null: the fixed head",
        exclusiveMinimum=0, maximum=1)
    memory_tolerance: float = param(
        0.005, "memory_target: the tolerance of the relative memory (thesis: 0.005)", per_model=True, minimum=0)
    loss_filter: float = param(
        0.0, "partitionwise: fraction of each mini-batch of partitions 1, 2, ... dropped before it reaches them: the "
        "examples with the lowest loss of the trained first partition and its head (loss filtering, thesis Sec. 6.8.4:"
        " 0.25); 0: off", minimum=0, exclusiveMaximum=1)
    filter_from: int = param(
        0, "partitionwise loss_filter / k_filter: first update of each upper partition that filters (the thesis: epoch"
        " 31)", minimum=0)
    k_filter_cap: float = param(
        0.6, "partitionwise k_filter: at most this fraction of the training rows is removed (the thesis's online "
        "filter, Sec. 6.8.2: 60 %)", minimum=0, maximum=1)

CORE = (DataParams, ModelParams, LossParams, OptimizerParams, RunParams, RegimeParams)
