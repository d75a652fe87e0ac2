"""Spectra of symmetric PSD matrices and their condition numbers (paper 004; seed-004 notes, section 6.5).

Eigenvalues in float64, descending, clamped at >= 0. kappa_p = lambda_1 / lambda_ceil(p d) (p = 1: the ordinary
kappa; inf when the denominator is below NONZERO_RTOL lambda_1, float64's resolution of the spectrum), kappa_nz =
lambda_max / the smallest eigenvalue above that. A Kronecker product's spectrum is the sorted set of pairwise
products (its kappa_p for p < 1 does not factorise).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr

P_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 1.0)
NONZERO_RTOL = 1e-12


def spectrum(matrix: torch.Tensor) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, float64, descending, clamped at >= 0 (NaN if not finite)."""
    if not torch.isfinite(matrix).all():
        return np.full(matrix.shape[0], np.nan)
    eig = torch.linalg.eigvalsh(matrix.double()).cpu().numpy()[::-1]
    return np.clip(eig, 0.0, None)


def kappa_p(eig: np.ndarray, p: float) -> float:
    """General condition number lambda_1 / lambda_ceil(p d) of a descending spectrum; inf when the denominator is
    numerically zero (<= NONZERO_RTOL lambda_1: below float64's resolution of the spectrum)."""
    d = len(eig)
    top, low = eig[0], eig[max(1, math.ceil(p * d - 1e-9)) - 1]
    if not np.isfinite(top) or top <= 0:
        return np.nan
    return np.inf if low <= NONZERO_RTOL * top else float(top / low)


def kappa_nonzero(eig: np.ndarray) -> float:
    """lambda_max / smallest eigenvalue above NONZERO_RTOL * lambda_max."""
    top = eig[0]
    if not np.isfinite(top) or top <= 0:
        return np.nan
    return float(top / eig[eig > NONZERO_RTOL * top].min())


def kron_spectrum(eig_x: np.ndarray, eig_g: np.ndarray) -> np.ndarray:
    """Eigenvalues of Sigma_x (x) Sigma_grad: all pairwise products, descending (Horn & Johnson 4.2.12)."""
    return np.sort(np.outer(eig_x, eig_g).ravel())[::-1]


def spectral_summary(eig: np.ndarray, name: str) -> dict[str, float | np.ndarray]:
    """lmax_<name>, kappa_<name> (at P_LEVELS) and kappa_nz_<name> of a descending spectrum."""
    return {f"lmax_{name}": float(eig[0]), f"kappa_{name}": np.array([kappa_p(eig, p) for p in P_LEVELS]),
            f"kappa_nz_{name}": kappa_nonzero(eig)}


def log10_kappa(kappa: xr.DataArray) -> xr.DataArray:
    """log10 of condition numbers for plots and claims, inf (a numerically zero denominator) shown as 12."""
    return xr.apply_ufunc(np.log10, kappa.where(np.isfinite(kappa), 1 / NONZERO_RTOL))


def log10_positive(values: xr.DataArray) -> xr.DataArray:
    """log10 of positive values, NaN elsewhere."""
    return xr.apply_ufunc(np.log10, values.where(values > 0))


