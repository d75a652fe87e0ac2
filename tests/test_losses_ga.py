"""Output heads of paper 001, ch. 4 (gradient amplification): gradients vs the thesis's closed forms, loss values
vs the thesis's formulas, amplification at init, the gradient-RMS probe vs a manual computation, config errors."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from conftest import make_cell
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.catalog.losses import HEADS, head_targets
from layerlab.core.config import ConfigError
from layerlab.nets.models import build_model
from layerlab.training.loop import train_cell
from layerlab.training.losses import head_activation, head_loss
from layerlab.training.optim import Batches

K = 10


def closed_form_y(loss: str, x: np.ndarray, alpha: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """y = act(x) as the thesis writes it (numpy, independent of the library)."""
    return {"mse": x, "sigmoid": 1 / (1 + np.exp(-x)), "tanh": np.tanh(x), "exp_ga": alpha * np.exp(x),
            "pow3_ga": alpha * x**3 + beta}[loss]


def thesis_loss(loss: str, x: np.ndarray, t: np.ndarray, cell: dict) -> float:
    """Mean over the batch of the thesis's per-example loss (sum over classes)."""
    if loss == "mse":
        per = 0.5 * (x - t) ** 2
    elif loss == "sigmoid":  # binary cross-entropy of sigmoid outputs
        y = 1 / (1 + np.exp(-x))
        per = -(t * np.log(y) + (1 - t) * np.log(1 - y))
    elif loss == "tanh":
        per = np.log(np.cosh(x)) - t * x
    elif loss == "exp_ga":  # sparse cross-entropy, section 4.6: |y| - t ln y with y = alpha e^x
        y = cell.loss.exp_alpha * np.exp(x)
        per = np.abs(y) - t * np.log(y)
    else:  # negative-correlation loss, section 4.8, with y = x
        per = 0.25 * cell.loss.pow3_alpha * x**4 + cell.loss.pow3_beta * x - t * x
    return float(per.sum(1).mean())


def logits_and_labels(seed: int = 0, n: int = 7, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, K, generator=g, dtype=torch.float64)
    return x, torch.randint(0, K, (n,), generator=g)


def one_hot(y: torch.Tensor, off: float, on: float) -> np.ndarray:
    t = np.full((len(y), K), off)
    t[np.arange(len(y)), y.numpy()] = on
    return t


@pytest.mark.parametrize("loss", HEADS)
@pytest.mark.parametrize("targets", [(None, None), (0.2, 0.7)])
def test_gradient_is_the_canonical_delta(loss, targets):
    """dL/dx = (act(x) - t) / batch (mean over the batch, sum over classes), autograd in float64."""
    cell = make_cell(loss=loss, target_off=targets[0], target_on=targets[1], exp_alpha=0.5, pow3_alpha=0.01,
                     pow3_beta=0.3)
    check_cell(cell)
    x, y = logits_and_labels()
    x.requires_grad_(True)
    head_loss(cell.loss, x, y).backward()
    off, on = head_targets(cell.loss)
    alpha = cell.loss.exp_alpha if loss == "exp_ga" else cell.loss.pow3_alpha
    expected = (closed_form_y(loss, x.detach().numpy(), alpha, cell.loss.pow3_beta) - one_hot(y, off, on)) / len(y)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(head_activation(cell.loss, x.detach()).numpy(),
                               closed_form_y(loss, x.detach().numpy(), alpha, cell.loss.pow3_beta), rtol=1e-12)


@pytest.mark.parametrize("loss", HEADS)
def test_loss_values_are_the_thesis_formulas(loss):
    cell = make_cell(loss=loss, exp_alpha=0.1, pow3_alpha=0.001, pow3_beta=0.4)
    x, y = logits_and_labels(seed=1, scale=2.0)
    t = one_hot(y, *head_targets(cell.loss))
    got = float(head_loss(cell.loss, x, y))
    assert got == pytest.approx(thesis_loss(loss, x.numpy(), t, cell), rel=1e-12, abs=1e-12)


def test_tanh_loss_is_stable_for_large_logits():
    cell = make_cell(loss="tanh")
    x = torch.tensor([[800.0, -800.0] + [0.0] * (K - 2)], dtype=torch.float64, requires_grad=True)
    value = head_loss(cell.loss, x, torch.tensor([0]))
    value.backward()
    # ln cosh(+-800) = 800 - ln 2; t = +1 on class 0, -1 on class 1 cancels the |x|
    assert float(value.detach()) == pytest.approx(2 * (800 - np.log(2)) - 800 - 800)
    assert torch.isfinite(x.grad).all()


def test_default_targets_and_constants_are_the_thesis_ones():
    assert head_targets(make_cell(loss="exp_ga").loss) == (0.0, 16.0)
    assert head_targets(make_cell(loss="pow3_ga").loss) == (0.0, 10.0)
    assert head_targets(make_cell(loss="mse").loss) == (0.0, 1.0)
    assert head_targets(make_cell(loss="tanh").loss) == (-1.0, 1.0)
    cell = make_cell()
    assert (cell.loss.exp_alpha, cell.loss.pow3_alpha, cell.loss.pow3_beta) == (0.1, 0.001, 0.4)


def test_amplification_of_the_output_delta_at_zero_logits():
    """At x = 0 the softmax delta is 1/K - t in [-1, 1]; exp-GA's is alpha - t with t in {0, 16}."""
    x = torch.zeros(4, K, dtype=torch.float64, requires_grad=True)
    y = torch.arange(4)
    F.cross_entropy(x, y).backward()
    softmax_rms = float(x.grad.pow(2).mean().sqrt())
    x.grad = None
    head_loss(make_cell(loss="exp_ga").loss, x, y).backward()
    exp_rms = float(x.grad.pow(2).mean().sqrt())
    closed = np.sqrt(((K - 1) * 0.1**2 + (0.1 - 16) ** 2) / ((K - 1) * (1 / K) ** 2 + (1 / K - 1) ** 2))
    assert exp_rms / softmax_rms == pytest.approx(closed, rel=1e-12)
    assert closed > 15



def train(cell, data):
    torch.set_num_threads(1)
    model = build_model(cell, data.input_shape, data.n_classes)
    init = copy.deepcopy(model)
    return train_cell(cell, data, model, torch.device("cpu"))[0], init


def test_grad_rms_probe_matches_a_manual_backward(digits):
    """grad_rms at step 0 = RMS of dL/dW of each layer on the first mini-batch from the initial weights; the last
    step (no update) is NaN; the layer axis covers the hidden layers and the output layer."""
    cell = make_cell(depth=2, width=16, loss="pow3_ga", optimizer="sgd", lr=1e-3, steps=6, log_every=3,
                     batch_size=32, grad_rms_probe=True)
    ds, init = train(cell, digits)
    assert ds["grad_rms"].dims == ("step", "layer") and ds.sizes["layer"] == 3
    idx = next(Batches(len(digits.train.y), cell.run.batch_size, torch.Generator().manual_seed(cell.run.seed)))
    logits, _ = init(digits.train.x[idx])
    head_loss(cell.loss, logits.double(), digits.train.y[idx]).backward()
    weights = [init.layers[0].weight, init.layers[1].weight, init.head.weight]
    manual = [float(torch.sqrt((w.grad.double() ** 2).sum() / w.numel())) for w in weights]
    np.testing.assert_allclose(ds["grad_rms"].sel(step=0).values, manual, rtol=1e-4)
    assert np.isfinite(ds["grad_rms"].sel(step=3)).all() and np.isnan(ds["grad_rms"].sel(step=6)).all()
    assert np.isnan(ds["batch_entropy"].sel(layer=2)).all()  # the output layer has no batch entropy


def test_gradient_amplification_at_init_in_every_layer(digits):
    """Same init and batch: exp-GA's weight gradients are >10x softmax+CE's in every layer (seed notes E4: ~19x)."""
    base = dict(depth=2, width=32, optimizer="sgd", lr=1e-3, steps=1, log_every=1, grad_rms_probe=True)
    ce = train(make_cell(loss="ce", **base), digits)[0]["grad_rms"].sel(step=0)
    ga = train(make_cell(loss="exp_ga", **base), digits)[0]["grad_rms"].sel(step=0)
    assert (ga / ce > 10).all(), (ga / ce).values


def test_frozen_weights_have_no_gradient_rms(digits):
    cell = make_cell(depth=2, width=8, steps=4, log_every=2, grad_rms_probe=True, freeze_weights="101")
    ds, _ = train(cell, digits)
    assert np.isnan(ds["grad_rms"].sel(layer=1)).all() and np.isfinite(ds["grad_rms"].sel(step=0, layer=[0, 2])).all()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"loss": "ce", "target_on": 2.0}, "target_off/target_on apply to the output heads"),
    ({"loss": "mse", "target_off": 1.0, "target_on": 1.0}, "needs target_on > target_off"),
    ({"loss": "sigmoid", "target_on": 2.0}, "needs targets in [0.0, 1.0]"),
    ({"loss": "tanh", "target_off": -2.0}, "needs targets in [-1.0, 1.0]"),
    ({"loss": "exp_ga", "target_off": -1.0}, "needs targets in [0.0, inf]"),
])
def test_bad_head_configs_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_cell(make_cell(**overrides))
