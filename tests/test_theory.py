"""Mean-field theory (paper 003's overlay) against an independent adaptive-quadrature computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from layerlab.measurements.theory import c_star, chi1, critical_sigma_w2, q_star, xi_c


def gaussian_mean(f) -> float:
    return quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12, limit=200)[0]


def reference_chi1(sw2: float, sb2: float) -> float:
    """q* by plain fixed-point iteration, chi_1 by adaptive quadrature."""
    q = 1.0
    for _ in range(2000):
        q = sw2 * gaussian_mean(lambda z, q=q: math.tanh(math.sqrt(q) * z) ** 2) + sb2
    return sw2 * gaussian_mean(lambda z: 1 / math.cosh(math.sqrt(q) * z) ** 4)


def reference_critical(sb2: float) -> float:
    lo, hi = 1.0, 3.0
    for _ in range(30):  # bisection on chi_1 = 1
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if reference_chi1(mid, sb2) < 1 else (lo, mid)
    return (lo + hi) / 2


def test_critical_point_matches_independent_computation_and_paper():
    crit = critical_sigma_w2(0.05)
    assert crit == pytest.approx(reference_critical(0.05), abs=2e-4)
    assert round(crit, 2) == 1.76  # paper 003: "the critical point of sigma_w^2 = 1.76" at sigma_b^2 = 0.05


def test_no_bias_critical_point_is_one():
    """Closed form: with sigma_b2 = 0, q* = 0 for sigma_w2 <= 1 and chi_1 = sigma_w2 there."""
    assert critical_sigma_w2(0.0) == pytest.approx(1.0, abs=1e-6)
    assert chi1(0.7, 0.0) == pytest.approx(0.7) and q_star(0.7, 0.0) == 0.0


@pytest.mark.parametrize("sw2", [0.5, 1.2, 2.5, 4.0])
def test_chi1_matches_quadrature(sw2):
    assert chi1(sw2, 0.05) == pytest.approx(reference_chi1(sw2, 0.05), rel=1e-6)


def test_ordered_xi_c_is_minus_one_over_log_chi1_and_diverges_at_criticality():
    assert c_star(1.0, 0.05) == 1.0
    assert xi_c(1.0, 0.05) == pytest.approx(-1 / math.log(reference_chi1(1.0, 0.05)), rel=1e-5)
    near = [xi_c(critical_sigma_w2(0.05) + d, 0.05) for d in (-0.05, -0.01, 0.01, 0.05)]
    assert near[1] > near[0] and near[2] > near[3] and min(near[1:3]) > 100


def test_chaotic_fixed_point_is_a_fixed_point_of_the_quadrature_map():
    sw2, sb2 = 3.0, 0.05
    c = c_star(sw2, sb2)
    assert 0 < c < 1
    q = q_star(sw2, sb2)
    rng = np.random.default_rng(0)  # Monte Carlo check of the correlation map at c*
    z1, z2 = rng.standard_normal((2, 2_000_000))
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    assert (sw2 * np.mean(np.tanh(u1) * np.tanh(u2)) + sb2) / q == pytest.approx(c, abs=3e-3)
    assert xi_c(sw2, sb2) == pytest.approx(9.05, rel=1e-2)  # seed notes' reference table


def reference_q(sw2: float, sb2: float) -> float:
    q = 1.0
    for _ in range(2000):
        q = sw2 * gaussian_mean(lambda z, q=q: math.tanh(math.sqrt(q) * z) ** 2) + sb2
    return q


def reference_correlation_map(sw2: float, sb2: float, q: float):
    """The correlation map on a trapezoid grid (not Gauss-Hermite), float64."""
    z = np.linspace(-10, 10, 801)
    w = np.exp(-z * z / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    z1, z2, ww = z[:, None], z[None, :], np.outer(w, w)
    t1 = np.tanh(math.sqrt(q) * z1)

    def corr_map(c: float) -> float:
        t2 = np.tanh(math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2))
        return float((sw2 * np.sum(ww * t1 * t2) + sb2) / q)

    return corr_map


@pytest.mark.parametrize(("sw2", "sb2", "paper_xi"), [(1.5, 0.0, 52.36), (3.0, 0.0, None), (1.5, 0.01, None),
                                                      (3.0, 0.05, 9.05)])
def test_chaotic_c_star_and_xi_c_match_iterated_map(sw2, sb2, paper_xi):
    """c* by iterating the map from c = 0.5 to its fixed point, xi_c = -1/ln(slope) by a central difference there."""
    corr_map = reference_correlation_map(sw2, sb2, reference_q(sw2, sb2))
    c = 0.5
    for _ in range(3000):
        c_next = corr_map(c)
        if abs(c_next - c) < 1e-12:
            break
        c = c_next
    # the iteration converges geometrically with rate = slope, so its error is |step| / (1 - slope)
    h = 1e-4
    slope = (corr_map(c + h) - corr_map(c - h)) / (2 * h)
    assert c_star(sw2, sb2) == pytest.approx(c, abs=1e-7)
    assert xi_c(sw2, sb2) == pytest.approx(-1 / math.log(slope), rel=1e-4)
    if paper_xi is not None:  # Poole et al.'s reference code gives xi_c = 52.36 at (1.5, 0)
        assert xi_c(sw2, sb2) == pytest.approx(paper_xi, rel=1e-3)
    if sb2 == 0:
        assert c_star(sw2, sb2) == 0.0
