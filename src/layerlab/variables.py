"""Which variables a study's store will hold, from the cells' switches and the modules' DESCRIPTIONS.

A stand-in until each probe declares its variables in a plug-in registry: this reads the DESCRIPTIONS dicts the
training loops and probes already write into their stores, so a variable added there is known here.
"""

from __future__ import annotations

LEARNABLE_BN = {"bn_gamma": ("gamma",), "bn_beta": ("beta",), "bn_gamma_beta": ("gamma", "beta")}
BN_VARIABLES = {"gamma", "gamma_activity", "beta", "beta_activity"}  # only learnable parameters are recorded
MEMORY = {"peak_memory_bytes", "cuda_peak_memory_bytes", "peak_memory_parts"}  # every cell, from probes.memory
STUDY = {"config", "trainable"}  # layerlab.store.combine_cells, layerlab.analysis.add_trainability
CASCADE_STUDY = {"predicted_trainable", "cost_ratio", "prediction_agrees"}  # layerlab.analysis


def _cell_variables(switches: tuple, probes: tuple[str, ...]) -> set[str]:
    from layerlab import layerwise, train
    from layerlab.probes import cascade, curvature, grad_rms, representation, weight_entropy

    training, bn_variant, grad, bits, quantize, curvature_every = switches
    names = set(cascade.DESCRIPTIONS) | CASCADE_STUDY if "cascade" in probes else set()
    names |= set(representation.DESCRIPTIONS) if "representation" in probes else set()
    if training != "backprop":  # no batch entropy, LBE, BatchNorm or in-training probes (layerlab.regimes)
        return names | set(layerwise.DESCRIPTIONS) - {"lbe", "batch_entropy", "alpha"} - BN_VARIABLES
    names |= set(train.DESCRIPTIONS) - BN_VARIABLES | MEMORY
    names |= {f"{p}{suffix}" for p in LEARNABLE_BN.get(bn_variant, ()) for suffix in ("", "_activity")}
    names |= {"grad_rms"} if grad else set()
    names |= set(weight_entropy.DESCRIPTIONS) if bits else set()
    names |= set(grad_rms.DESCRIPTIONS) - {"grad_rms"} - set(weight_entropy.DESCRIPTIONS) if quantize else set()
    names |= set(curvature.DESCRIPTIONS) if curvature_every else set()
    return names


def study_variables(cells: dict[str, dict], probes: list[str]) -> set[str]:
    """Names of the data variables of the study store of `cells` (full parameters) measured with `probes`."""
    keys = {(c["training"], c["bn_variant"], c["grad_rms_probe"], c["weight_entropy_bits"] > 0,
             c["quantize_bits"] > 0, c["curvature_every"] > 0) for c in cells.values()}
    return STUDY.union(*(_cell_variables(k, tuple(probes)) for k in keys))
