"""Axis labels: a variable's short name with the papers' symbols in matplotlib mathtext, and its units. The long
description (the store's `long_name`) belongs in the caption, not on an axis."""

from __future__ import annotations

import xarray as xr

# variable -> its words and symbol; `log10_X`, `X_dynamic` and `last_X` are labelled from X
SYMBOLS = {
    "batch_entropy": r"batch entropy $H^l$",
    "alpha": r"LBE target $\max(\alpha_{\min}, |\alpha^l|)$",
    "lbe": r"$\mathcal{L}_{BE}$",
    "ce": r"$\mathcal{L}_{CE}$",
    "loss": "training loss",
    "loss_value": "training loss",
    "test_acc": "test accuracy",
    "test_acc_curve": "test accuracy",
    "test_acc_last3": "test accuracy (last 3 evaluations)",
    "test_error": "test error",
    "test_loss": "test loss",
    "test_loss_curve": "test loss",
    "train_acc": "training accuracy",
    "train_loss": "training loss",
    "layer_test_acc": "head test accuracy",
    "peak_test_acc": "peak head test accuracy",
    "trainable": "trainable",
    "train_kept": "fraction kept by k-filtering",
    "weight_entropy": r"weight entropy $H_N$",
    "huffman_bits": "Huffman bits per weight",
    "sent_huffman_bits": "Huffman bits per weight sent",
    "sent_bits": "bits per weight sent",
    "grad_rms": r"RMS of $\partial L / \partial W$",
    "gamma": r"BatchNorm $\gamma$",
    "beta": r"BatchNorm $\beta$",
    "gamma_activity": r"activity of $\gamma$",
    "beta_activity": r"activity of $\beta$",
    "n_dying": "dying units",
    "n_full": "full units",
    "lmax_x": r"$\lambda_{\max}(\Sigma_x)$",
    "lmax_g": r"$\lambda_{\max}(\Sigma_{grad})$",
    "lmax_kron": r"$\lambda_{\max}(\Sigma_x \otimes \Sigma_{grad})$",
    "lmax_wgrad": r"$\lambda_{\max}$ of the weight gradient",
    "kappa_x": r"$\kappa_p(\Sigma_x)$",
    "kappa_g": r"$\kappa_p(\Sigma_{grad})$",
    "kappa_kron": r"$\kappa_p(\Sigma_x \otimes \Sigma_{grad})$",
    "kappa90_x_init": r"$\kappa_{90\%}(\Sigma_x)$ at step 0",
    "kappa90_x_final": r"$\kappa_{90\%}(\Sigma_x)$, final",
    "kappa90_g_init": r"$\kappa_{90\%}(\Sigma_{grad})$ at step 0",
    "kappa90_g_final": r"$\kappa_{90\%}(\Sigma_{grad})$, final",
    "domination": r"$\sigma_{\max}(\partial L / \partial W) \,/\, \sigma_{\max}(W)$",
    "weight_norm": r"$\|W\|_F$",
    "kappa": r"$\kappa_p$",
    "lmax": r"$\lambda_{\max}$",
    "lmax_full": r"$\lambda_{\max}(F)$",
    "kappa_full": r"$\kappa_p(F)$",
    "lmax_block": r"$\lambda_{\max}(F_k)$",
    "kappa_block": r"$\kappa_p(F_k)$",
    "lmax_kfac": r"$\lambda_{\max}$(K-FAC)",
    "kappa_kfac": r"$\kappa_p$(K-FAC)",
    "kappa_gap": r"$\kappa_p(F) / \max_k \kappa_p(F_k)$",
    "kfac_kappa_ratio": r"$\kappa_p$(K-FAC) / $\kappa_p(F_k)$",
    "kfac_lmax_ratio": r"$\lambda_{\max}$(K-FAC) / $\lambda_{\max}(F_k)$",
    "stable_rank": r"stable rank $\|W\|_F^2 / \|W\|_2^2$",
    "re_kl": "relative entropy of the reconstruction",
    "re_diff_entropy": r"reconstruction entropy $S$",
    "cutoff_depth": r"cascade cutoff $l^*$",
    "selection_entropy": r"$H(Y|Z_i)$",
    "k_redundancy": "k-redundancy",
    "lsd_train": "LSD (probe fit)",
    "lsd_heldout": "LSD (held out)",
    "probe_acc_heldout": "probe accuracy (held out)",
    "peak_memory_bytes": "peak memory",
    "relative_memory": "memory relative to backprop",
    "cost_ratio": "cascade time / training time",
}
UNITLESS = {"1", ""}
PLAIN_LENGTH = 32  # a long_name up to this long is a label itself


def words(name: str, long_name: str = "") -> str:
    """A variable's label without units."""
    if name in SYMBOLS:
        return SYMBOLS[name]
    for prefix, form in (("log10_", r"$\log_{{10}}$ {}"), ("last_", "output layer: {}")):
        if name.startswith(prefix) and name.removeprefix(prefix) in SYMBOLS:
            return form.format(SYMBOLS[name.removeprefix(prefix)])
    if name.endswith("_dynamic"):
        return words(name.removesuffix("_dynamic"), long_name)
    return long_name if long_name and len(long_name) <= PLAIN_LENGTH else name.replace("_", " ")


def axis_label(da: xr.DataArray, name: str | None = None) -> str:
    """`words (units)` of a store variable (units left out where it has none)."""
    name = name or str(da.name)
    units = str(da.attrs.get("units", "1"))
    text = words(name, str(da.attrs.get("long_name", "")))
    return text if units in UNITLESS else f"{text} ({units})"
