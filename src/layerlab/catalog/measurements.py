"""Built-in measurements beside training (`probes:` in a study; implementations: layerlab.probes.cascade,
layerlab.probes.representation, layerlab.probes.stable_rank; per-cell and study-level derivations:
layerlab.analysis)."""

from __future__ import annotations

from layerlab.config import ConfigError, canonical_json
from layerlab.registry import MODELS, register_measurement

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
CASCADE_MODELS = ("fnn", "cascade_cnn", "cascade_resnet")  # models whose layers the cascade can reconstruct


def deepest_sibling(cells: dict[str, dict]) -> dict[str, str]:
    """Cell id -> id of the deepest cell that differs from it in depth only.

    Paper 003 reads the cascade cutoff l* off one deep network and predicts every shallower network with the
    same parameters trainable iff its depth <= l*; the cascade therefore runs on the deepest sibling only.
    """
    deepest: dict[str, str] = {}
    key = {cid: canonical_json({k: v for k, v in cell.items() if k != "depth"}) for cid, cell in cells.items()}
    for cid, cell in cells.items():
        best = deepest.get(key[cid])
        if best is None or cell["depth"] > cells[best]["depth"]:
            deepest[key[cid]] = cid
    return {cid: deepest[key[cid]] for cid in cells}


def check_cascade(cell: dict) -> None:
    if cell["model"] not in CASCADE_MODELS or cell["bn_variant"] != "none":
        raise ConfigError(f"the cascade probe reconstructs fully connected or plain conv layers: it needs model "
                          f"{' or '.join(CASCADE_MODELS)} without BN (got '{cell['model']}', bn_variant "
                          f"'{cell['bn_variant']}')")


def check_stable_rank(cell: dict) -> None:
    if not MODELS[cell["model"]].one_map_per_layer:
        raise ConfigError(f"the stable_rank probe reads one Linear/Conv map per layer; model '{cell['model']}' has "
                          f"layers with several")


def check_representation(cell: dict) -> None:
    if cell["representation_k"] >= cell["representation_samples"]:
        raise ConfigError(f"representation_k ({cell['representation_k']}) must be smaller than "
                          f"representation_samples ({cell['representation_samples']}): k neighbours besides the sample")


# paper 003: reconstruction-entropy cascade of the untrained network, on the deepest sibling of each cell
register_measurement("cascade", "layerlab.probes.cascade:run_cascade", CASCADE, reads=("init",), source=deepest_sibling,
                     collect="layerlab.analysis:add_cascade_prediction", summarize="layerlab.analysis:cascade_summary",
                     check=check_cascade, gpu=True)
# paper 001 ch. 5: per-layer LSD, k-redundancy and selection entropy of the init and final networks
register_measurement("representation", "layerlab.probes.representation:run_representation", REPRESENTATION,
                     reads=("init", "final"), check=check_representation)
# paper 001 ch. 6, Fig. 6.3: stable rank of every layer's weight, init and final networks
register_measurement("stable_rank", "layerlab.probes.stable_rank:run_stable_rank", STABLE_RANK,
                     reads=("init", "final"), summarize="layerlab.probes.stable_rank:stable_rank_summary",
                     check=check_stable_rank)
