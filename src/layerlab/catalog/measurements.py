"""Built-in measurements beside training (`probes:` in a study; implementations: layerlab.measurements.cascade,
layerlab.measurements.representation, layerlab.measurements.stable_rank, layerlab.measurements.fisher; per-cell and
study-level derivations: layerlab.report.analysis)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from layerlab.catalog.checks import input_shape
from layerlab.catalog.models import FNNParams
from layerlab.core.config import ConfigError
from layerlab.core.params import Section, param
from layerlab.core.registry import DATASETS, MODELS, register_measurement

if TYPE_CHECKING:
    from layerlab.core.cell import Cell

CASCADE = {
    "re_kl": ("relative entropy of reconstruction vs original, / last layer, median over samples", "1"),
    "re_kl_mean": ("relative entropy of reconstruction vs original, mean over samples", "nat"),
    "re_diff_entropy": ("reconstruction differential entropy S", "nat"),
    "cutoff_depth": ("cascade cutoff l* (layers until the relative entropy saturates)", "layers"),
    "cutoff_depth_diff_entropy": ("cascade cutoff l*_S (layers until the differential entropy saturates)", "layers"),
    "cascade_seconds": ("wall time of cascade training and evaluation", "s"),
    "reconstruction": ("reconstruction of test images from each layer", "input units"),
    "original": ("test images that were reconstructed", "input units"),
    "predicted_trainable": ("cascade prediction: depth <= l* of the deepest network with these parameters", "1"),
    "cost_ratio": ("cascade time / training time", "1"),
    "cascade_epoch_cost": ("one cascade epoch's time in epochs of training the same network (paper 003, Sec. 2.2)",
                           "epochs"),
    "prediction_agrees": ("cascade prediction matches trained ground truth", "1"),
    "predicted_trainable_diff_entropy": ("differential-entropy prediction: depth <= l*_S of the deepest network",
                                         "1"),
    "prediction_agrees_diff_entropy": ("differential-entropy prediction matches trained ground truth", "1"),
    "predictors_agree": ("the relative-entropy and differential-entropy predictions agree", "1"),
}
REPRESENTATION_PER_LAYER = ("lsd_train", "lsd_heldout", "probe_acc_train", "probe_acc_heldout", "k_redundancy",
                            "selection_entropy", "selection_skipped")  # the (checkpoint, rep_layer) measures
REPRESENTATION = {
    "lsd_train": ("LSD 1/m ||Y - [Z,1][Z,1]^+ Y||^2 of the linear probe on the probe subset", "1"),
    "lsd_heldout": ("held-out LSD: the probe fitted on the probe subset, applied to test rows", "1"),
    "probe_acc_train": ("linear least-squares probe accuracy on the probe subset", "1"),
    "probe_acc_heldout": ("linear least-squares probe accuracy on held-out test rows", "1"),
    "k_redundancy": ("k-redundancy: fraction of samples whose k nearest neighbours share their label", "1"),
    "selection_entropy": ("H(Y|Z_i): mean over features of the class entropy of their selection S_+", "bit"),
    "selection_skipped": ("fraction of features with an empty selection (skipped in H(Y|Z_i))", "1"),
    "rep_features": ("features of the representation (after pooling conv maps)", "1"),
    "rep_label_entropy": ("class entropy H(Y) of the probe subset", "bit"),
    "rep_samples": ("rows of the training probe subset", "1"),
    "rep_heldout_samples": ("held-out test rows for the held-out LSD", "1"),
    "representation_seconds": ("wall time of the representation probe (all checkpoints)", "s"),
}
STABLE_RANK = {
    "stable_rank": ("stable rank ||W||_F^2 / ||W||_2^2", "1"),  # conv kernels as (C_out, C_in k k) matrices
    "stable_rank_gap": ("mean over layers of |log stable rank - log that of backprop|", "1"),
}
FISHER = {
    "lmax_full": ("lambda_max of the exact Fisher F over all layers' weights", "1"),
    "kappa_full": ("general condition number kappa_p of the exact F", "1"),
    "kappa_nz_full": ("lambda_max / smallest non-zero eigenvalue of the exact F", "1"),
    "eig_full": ("eigenvalues of the exact F, descending, clamped at >= 0", "1"),
    "lmax_block": ("lambda_max of the exact diagonal block F_k of layer k's weight", "1"),
    "kappa_block": ("kappa_p of the exact block F_k", "1"),
    "kappa_nz_block": ("lambda_max / smallest non-zero eigenvalue of F_k", "1"),
    "lmax_kfac": ("lambda_max of the K-FAC approximation G_k (x) A_k of F_k", "1"),
    "kappa_kfac": ("kappa_p of the K-FAC approximation (sorted product spectrum)", "1"),
    "kappa_nz_kfac": ("lambda_max / smallest non-zero eigenvalue of the K-FAC approximation", "1"),
    "kfac_rel_error": ("||F_k - G_k (x) A_k||_F / ||F_k||_F", "1"),
    "kfac_lmax_ratio": ("lambda_max(K-FAC) / lambda_max(F_k)", "1"),
    "log10_kfac_kappa_ratio": ("log10 kappa_p(K-FAC) - log10 kappa_p(F_k) (inf shown as 1e12)", "1"),
    "log10_kappa_gap": ("log10 kappa_p(F) - max over layers log10 kappa_p(F_k)", "1"),
    **{f"log10_{q}_{m}": (f"log10 {q} of the {what} (kappa: inf shown as 1e12)", "1")
       for q in ("kappa", "lmax") for m, what in (("full", "exact F"), ("block", "exact F_k"), ("kfac", "K-FAC"))},
    "fisher_params": ("parameters of F (the weights of every layer)", "1"),
    "fisher_rows": ("probe rows the Fisher matrices average over", "1"),
    "fisher_seconds": ("wall time of the Fisher measurement (all checkpoints and types)", "s"),
}
FISHER_MAX_PARAMS = 20_000  # a dense P x P float64 matrix of 3.2 GB and its eigendecomposition
CASCADE_MODELS = ("fnn", "cascade_cnn", "cascade_resnet")  # models whose layers the cascade can reconstruct


@dataclass(frozen=True)
class CascadeParams(Section):
    """The cascade's training and cutoffs."""

    cascade_epochs: float = param(1, "passes over the training split", per_model=True, exclusiveMinimum=0)
    cascade_batch_size: int = param(100, per_model=True, minimum=2)
    cascade_lr: float = param(0.001, "Adam learning rate", per_model=True, exclusiveMinimum=0)
    cascade_eval_samples: int = param(100, "test images for the entropies", per_model=True, minimum=2)
    cascade_images: int = param(4, "reconstructions kept for plotting", per_model=True, minimum=0)
    cutoff_eta: float = param(0.005, "relative saturation tolerance", per_model=True, exclusiveMinimum=0)
    cutoff_eta_diff_entropy: float = param(
        0.005, "relative saturation tolerance of the differential entropy S for l*_S",
        per_model=True, exclusiveMinimum=0)


@dataclass(frozen=True)
class RepresentationParams(Section):
    """The representation measures' probe subset (also of the training probe representation_dynamic)."""

    representation_samples: int = param(
        2000, "class-balanced seeded probe subset of the training split (and as many held-out test rows for the "
        "held-out LSD); capped at the split size", per_model=True, minimum=2)
    representation_k: int = param(
        10, "k-redundancy: a sample is redundant iff all its k nearest neighbours share its label",
        per_model=True, minimum=1)
    representation_conv: Literal["pool", "flatten"] = param(
        "pool", "conv feature maps as representation: global average pool (pool) or flattened", per_model=True)


@dataclass(frozen=True)
class FisherParams(Section):
    """The Fisher measurement's probe rows and Fisher types."""

    fisher_samples: int = param(
        1024, "probe `fisher`: the first N training rows, one batch (BN in training mode), for the exact Fisher "
        "matrices and their K-FAC factors", per_model=True, minimum=2)
    fisher_types: tuple[Literal["type2", "empirical"], ...] = param(
        ("type2", "empirical"), "probe `fisher`: type2, the true Fisher (y ~ model; the GGN of softmax cross-entropy);"
        " empirical, the second moment of the true-label gradients (paper 004, App. B)",
        per_model=True, minItems=1, uniqueItems=True)


def deepest_sibling(cells: Mapping[str, Cell]) -> dict[str, str]:
    """Cell id -> id of the deepest cell that differs from it in depth only.

    Paper 003 reads the cascade cutoff l* off one deep network and predicts every shallower network with the
    same parameters trainable iff its depth <= l*; the cascade therefore runs on the deepest sibling only.
    """
    deepest: dict[str, str] = {}
    key = {cid: cell.replace(dataclasses.replace(cell.model, depth=0)).json for cid, cell in cells.items()}
    for cid, cell in cells.items():
        best = deepest.get(key[cid])
        if best is None or cell.model.depth > cells[best].model.depth:
            deepest[key[cid]] = cid
    return {cid: deepest[key[cid]] for cid in cells}


def check_cascade(cell: Cell) -> None:
    model = cell.model
    if model.model not in CASCADE_MODELS or model.bn_variant != "none":
        raise ConfigError(f"the cascade probe reconstructs fully connected or plain conv layers: it needs model "
                          f"{' or '.join(CASCADE_MODELS)} without BN (got '{model.model}', bn_variant "
                          f"'{model.bn_variant}')")


def check_stable_rank(cell: Cell) -> None:
    if not MODELS[cell.model.model].one_map_per_layer:
        raise ConfigError(f"the stable_rank probe reads one Linear/Conv map per layer; model '{cell.model.model}' "
                          f"has layers with several")


def check_representation(cell: Cell) -> None:
    params = cell[RepresentationParams]
    if params.representation_k >= params.representation_samples:
        raise ConfigError(f"representation_k ({params.representation_k}) must be smaller than "
                          f"representation_samples ({params.representation_samples}): k neighbours besides the "
                          f"sample")


def check_fisher(cell: Cell) -> None:
    model = cell.model
    if model.model != "fnn" or cell.loss.loss != "ce":
        raise ConfigError(f"the fisher probe computes the Fisher of softmax cross-entropy for an MLP: it needs model "
                          f"'fnn' and loss 'ce' (got '{model.model}', '{cell.loss.loss}')")
    dataset = DATASETS[cell.data.dataset]
    widths = cell[FNNParams].widths or (model.width,) * model.depth
    sizes = [math.prod(input_shape(cell.data)), *widths, dataset.classes]
    if (params := sum(a * b for a, b in itertools.pairwise(sizes))) > FISHER_MAX_PARAMS:
        raise ConfigError(f"the fisher probe's dense matrix over {params} weights is too large (at most "
                          f"{FISHER_MAX_PARAMS}): reduce width/depth or the input (input_resize, input_pool)")
    rows = min(dataset.splits[0], cell.data.train_subset or dataset.splits[0])
    if (samples := cell[FisherParams].fisher_samples) > rows:
        raise ConfigError(f"fisher_samples {samples} is larger than the training split ({rows} rows)")


# paper 003: reconstruction-entropy cascade of the untrained network, on the deepest sibling of each cell
register_measurement("cascade", "layerlab.measurements.cascade:run_cascade", CASCADE, reads=("init",),
                     source=deepest_sibling, collect="layerlab.report.analysis:add_cascade_prediction",
                     summarize="layerlab.report.analysis:cascade_summary", check=check_cascade, gpu=True,
                     parameters=CascadeParams)
# paper 001 ch. 5: per-layer LSD, k-redundancy and selection entropy of the init and final networks
register_measurement("representation", "layerlab.measurements.representation:run_representation", REPRESENTATION,
                     reads=("init", "final"), check=check_representation, parameters=RepresentationParams)
# paper 001 ch. 6, Fig. 6.3: stable rank of every layer's weight, init and final networks
register_measurement("stable_rank", "layerlab.measurements.stable_rank:run_stable_rank", STABLE_RANK,
                     reads=("init", "final"), summarize="layerlab.measurements.stable_rank:stable_rank_summary",
                     check=check_stable_rank)
# paper 004 (E1/E2): exact full Fisher, its layer blocks and their K-FAC approximations, init and final networks
register_measurement("fisher", "layerlab.measurements.fisher:run_fisher", FISHER, reads=("init", "final"),
                     check=check_fisher, gpu=True, parameters=FisherParams)
