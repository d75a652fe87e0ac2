"""Model shapes and initialisation schemes against their defining distributions."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_cell

from layerlab.nets.models import build_model, init_weights


@pytest.mark.parametrize(("model", "shapes"), [("fnn", [(7, 12)] * 5), ("cnn", [(7, 12, 8, 8)] * 4 + [(7, 192)])])
def test_every_hidden_layer_is_exposed(model, shapes):
    net = build_model(make_cell(model=model, depth=5, width=12), (1, 8, 8), 10)
    logits, hidden = net(torch.randn(7, 1, 8, 8))
    assert logits.shape == (7, 10) and [tuple(h.shape) for h in hidden] == shapes


def test_paper_cnn_layer_sizes():
    """Paper 000's 500-layer CNN: 499 convs 1->8->8 channels on 28x28, FC 6272 -> 1568, classifier 1568 -> 10."""
    net = build_model(make_cell(model="cnn", depth=500, width=8), (1, 28, 28), 10)
    assert len(net.layers) == 500 and sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 499
    assert net.layers[-1][1].weight.shape == (1568, 6272) and net.head.weight.shape == (10, 1568)


def test_vanilla_network_has_no_norm_or_skip():
    net = build_model(make_cell(depth=3, width=8), (1, 8, 8), 10)
    kinds = {type(m).__name__ for m in net.modules()}
    assert kinds == {"LayerwiseNet", "ModuleList", "Linear", "ReLU"}


def test_gaussian_init_variances():
    net = build_model(make_cell(depth=2, width=1000, init="gaussian", sigma_w2=1.7, sigma_b2=0.3), (1, 20, 20), 10)
    w, b = net.layers[1].weight, net.layers[1].bias
    assert w.var().item() == pytest.approx(1.7 / 1000, rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=3e-4)
    assert b.var().item() == pytest.approx(0.3, rel=0.15)


def test_he_normal_and_torch_default():
    he = build_model(make_cell(depth=2, width=1000, init="he_normal"), (1, 20, 20), 10)
    assert he.layers[1].weight.var().item() == pytest.approx(2 / 1000, rel=0.02)
    assert (he.layers[1].bias == 0).all()
    default = build_model(make_cell(depth=2, width=1000, init="torch_default"), (1, 20, 20), 10)
    w = default.layers[1].weight
    assert w.abs().max().item() <= 1 / math.sqrt(1000)
    assert w.var().item() == pytest.approx(1 / (3 * 1000), rel=0.02)  # U(+-1/sqrt(fan_in))


def test_same_seed_same_weights_other_seed_differs():
    a = build_model(make_cell(seed=3), (1, 8, 8), 10).state_dict()
    b = build_model(make_cell(seed=3), (1, 8, 8), 10).state_dict()
    c = build_model(make_cell(seed=4), (1, 8, 8), 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        init_weights(torch.nn.Linear(2, 2), "xavier", 1.0, 0.0)
