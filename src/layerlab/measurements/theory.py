"""Mean-field theory of deep tanh networks (Poole et al. 2016, Schoenholz et al. 2017), as used by paper 003.

Conventions: W_ij ~ N(0, sigma_w2 / fan_in), b_i ~ N(0, sigma_b2), phi = tanh. Gaussian integrals use
Gauss-Hermite quadrature (probabilists' weight), 2-D ones a product rule.
  length map   q  -> sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2, fixed point q*
  chi_1        sigma_w2 E[phi'(sqrt(q*) z)^2]; ordered if < 1, chaotic if > 1; the critical line is chi_1 = 1
  c*           stable fixed point of the correlation map (1 in the ordered phase)
  xi_c         -1 / ln(sigma_w2 E[phi'(u1) phi'(u2)]) at c*; equals -1/ln(chi_1) in the ordered phase
Networks train when depth <~ 6 xi_c (Schoenholz et al.).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

_z, _w = np.polynomial.hermite_e.hermegauss(161)
_w = _w / np.sqrt(2 * np.pi)
Z1, Z2 = np.meshgrid(_z, _z, indexing="ij")
W2 = np.outer(_w, _w)


def _dphi(x: np.ndarray) -> np.ndarray:
    return 1.0 / np.cosh(x) ** 2


def q_star(sigma_w2: float, sigma_b2: float) -> float:
    """Fixed point of the length map (0 in the ordered phase without bias)."""

    def excess(q: float) -> float:
        return sigma_w2 * np.sum(_w * np.tanh(np.sqrt(q) * _z) ** 2) + sigma_b2 - q

    if sigma_b2 == 0 and sigma_w2 <= 1:
        return 0.0
    return brentq(excess, 1e-12, sigma_w2 + sigma_b2 + 1.0, xtol=1e-14)


def chi1(sigma_w2: float, sigma_b2: float) -> float:
    q = q_star(sigma_w2, sigma_b2)
    return float(sigma_w2 * np.sum(_w * _dphi(np.sqrt(q) * _z) ** 2))


def _correlated(q: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    u1 = np.sqrt(q) * Z1
    return u1, np.sqrt(q) * (c * Z1 + np.sqrt(max(0.0, 1 - c * c)) * Z2)


def correlation_map(c: float, sigma_w2: float, sigma_b2: float) -> float:
    q = q_star(sigma_w2, sigma_b2)
    u1, u2 = _correlated(q, c)
    return float((sigma_w2 * np.sum(W2 * np.tanh(u1) * np.tanh(u2)) + sigma_b2) / q)


def c_star(sigma_w2: float, sigma_b2: float) -> float:
    """Stable fixed point of the correlation map: 1 when ordered, below 1 when chaotic."""
    if chi1(sigma_w2, sigma_b2) <= 1:
        return 1.0
    if sigma_b2 == 0:  # odd map, so 0 is a fixed point; convex on [0, 1] with slope > 1 at 1, so it is the stable one
        return 0.0
    return brentq(lambda c: correlation_map(c, sigma_w2, sigma_b2) - c, 0.0, 1 - 1e-9, xtol=1e-12)


def xi_c(sigma_w2: float, sigma_b2: float) -> float:
    """Correlation depth scale; diverges on the critical line."""
    c = c_star(sigma_w2, sigma_b2)
    if c == 1.0:
        slope = chi1(sigma_w2, sigma_b2)
    else:
        u1, u2 = _correlated(q_star(sigma_w2, sigma_b2), c)
        slope = float(sigma_w2 * np.sum(W2 * _dphi(u1) * _dphi(u2)))
    return float("inf") if slope >= 1 else -1.0 / np.log(slope)


def critical_sigma_w2(sigma_b2: float) -> float:
    """sigma_w2 on the order-to-chaos line chi_1 = 1."""
    return brentq(lambda s: chi1(s, sigma_b2) - 1.0, 0.5, 20.0, xtol=1e-10)
