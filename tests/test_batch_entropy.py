"""Batch entropy and the LBE loss (paper 000) against independent float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerlab.training.losses import LBELoss, batch_entropy, layer_entropies, regularized


def reference_entropy(a: np.ndarray, constant: float) -> float:
    """Eq. 3 in float64 numpy: mean over neurons of 1/2 log(c * var_unbiased + 1)."""
    var = a.reshape(len(a), -1).astype(np.float64).var(axis=0, ddof=1)
    return float(np.mean(0.5 * np.log(constant * var + 1.0)))


@pytest.mark.parametrize(("name", "constant"), [("pi_e", math.pi * math.e), ("two_pi_e", 2 * math.pi * math.e)])
def test_matches_float64_reference_on_conv_shaped_input(name, constant):
    a = torch.randn(32, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.01, 3, 60).view(3, 4, 5)
    assert batch_entropy(a, name).item() == pytest.approx(reference_entropy(a.numpy(), constant), rel=1e-6)


def test_gaussian_closed_form():
    """For N(0, s_k^2) neurons and a large batch, H -> mean_k 1/2 log(pi e s_k^2 + 1)."""
    sigma = np.array([0.05, 0.3, 1.0, 4.0])
    a = torch.randn(400_000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * torch.tensor(sigma)
    closed = np.mean(0.5 * np.log(math.pi * math.e * sigma**2 + 1))
    assert batch_entropy(a, "pi_e").item() == pytest.approx(closed, abs=2e-3)


def test_constant_layer_has_zero_entropy_and_finite_zero_gradient():
    a = torch.full((16, 8), 0.7, requires_grad=True)
    h = batch_entropy(a, "pi_e")
    h.backward()
    assert h.item() == 0.0
    assert torch.isfinite(a.grad).all() and (a.grad == 0).all()


def test_batch_of_one_is_rejected():
    with pytest.raises(ValueError, match="at least 2 samples"):
        batch_entropy(torch.randn(1, 5), "pi_e")


def test_layer_entropies_shape():
    hidden = [torch.randn(10, 6), torch.randn(10, 2, 3, 3), torch.zeros(10, 4)]
    h = layer_entropies(hidden, "pi_e")
    assert h.shape == (3,) and h[2] == 0 and (h[:2] > 0).all()


def test_lbe_loss_value_matches_formula():
    torch.manual_seed(0)
    hidden = [torch.randn(20, 5) * s for s in (0.1, 1.0, 3.0)]
    loss_fn = LBELoss(3, alpha=0.1, alpha_min=0.2, beta=0.5, constant="pi_e")
    with torch.no_grad():
        loss_fn.alpha.copy_(torch.tensor([0.1, -0.8, 1.5]))
    ce = torch.tensor(2.0)
    total, lbe = loss_fn(ce, hidden)
    h = np.array([reference_entropy(a.numpy(), math.pi * math.e) for a in hidden])
    target = np.maximum(0.2, np.abs([0.1, -0.8, 1.5]))
    expected_lbe = 0.5 * np.mean((h - target) ** 2)
    assert lbe.item() == pytest.approx(expected_lbe, rel=1e-5)
    assert total.item() == pytest.approx(2.0 + 2.0 * expected_lbe, rel=1e-5)


@pytest.mark.parametrize(("scale", "alpha", "sign"), [(0.05, 1.0, -1), (10.0, 0.5, +1)])
def test_lbe_gradient_pushes_entropy_toward_target(scale, alpha, sign):
    """H below the target: growing the activations lowers the loss (dL/ds < 0); above: dL/ds > 0."""
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    s = torch.tensor(scale, requires_grad=True)
    loss_fn = LBELoss(1, alpha=alpha, alpha_min=0.2, beta=1.0, constant="pi_e")
    total, _ = loss_fn(torch.tensor(2.3), [s * x])
    total.backward()
    assert torch.sign(s.grad).item() == sign


def test_alpha_below_alpha_min_gets_no_gradient_and_above_does():
    hidden = [torch.randn(32, 4)]
    loss_fn = LBELoss(1, alpha=0.1, alpha_min=0.2, beta=1.0, constant="pi_e")
    loss_fn(torch.tensor(1.0), hidden)[0].backward()
    assert loss_fn.alpha.grad.item() == 0.0
    loss_fn = LBELoss(1, alpha=3.0, alpha_min=0.2, beta=1.0, constant="pi_e")
    loss_fn(torch.tensor(1.0), hidden)[0].backward()
    assert loss_fn.alpha.grad.item() > 0  # target above H: alpha is pulled down toward H


def test_regularized_layers():
    assert regularized([0, 1, 2, 3], "middle") == [1, 2]
    assert regularized([0, 1, 2, 3], "all") == [0, 1, 2, 3]
