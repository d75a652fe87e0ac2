"""Paper 004: K-FAC factors, their spectra and condition numbers against float64 references, the Kronecker identity,
and the in-training wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_cell
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.core.store import combine_cells
from layerlab.measurements.spectra import kappa_nonzero, kappa_p
from layerlab.nets.models import LayerwiseNet, build_model
from layerlab.probes.curvature import P_LEVELS, layer_factors, measure, measured_layers
from layerlab.report.plots import save_plot
from layerlab.training.loop import train_cell


def per_sample_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """d loss_i / d theta for every sample i (torch.func), float64."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        logits, _ = functional_call(model, p, (xi[None],))
        return F.cross_entropy(logits, yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def tiny_net(depth: int = 2, seed: int = 0) -> LayerwiseNet:
    cell = make_cell(depth=depth, width=6, seed=seed)
    return build_model(cell, (4,), 3).double()


def reference_eigs(m: np.ndarray) -> np.ndarray:
    return np.clip(np.linalg.eigvalsh(m)[::-1], 0, None)


def test_kronecker_identity_single_linear_layer():
    """One linear layer: the per-sample weight-gradient outer product is exactly Sigma_grad (x) Sigma_x for one
    sample, and over a batch the factors are exactly E[a a^T] and E[d d^T] with d = softmax(z) - onehot(y)."""
    torch.manual_seed(0)
    model = LayerwiseNet([], "relu", nn.Linear(5, 3, bias=False), flatten_input=True).double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for i in range(2):
        (sigma_x, sigma_g), = layer_factors(model, x[i : i + 1], y[i : i + 1], "empirical")
        g = per_sample_grads(model, x[i : i + 1], y[i : i + 1])["head.weight"][0].flatten()  # row-major vec
        torch.testing.assert_close(torch.outer(g, g), torch.kron(sigma_g, sigma_x), rtol=1e-12, atol=1e-14)
    (sigma_x, sigma_g), = layer_factors(model, x, y, "empirical")
    delta = torch.softmax(x @ model.head.weight.T, 1) - F.one_hot(y, 3).double()
    torch.testing.assert_close(sigma_x, x.T @ x / len(x), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sigma_g, delta.T @ delta / len(x), rtol=1e-12, atol=1e-14)
    # the exact block is E[(d d^T) (x) (a a^T)], which the K-FAC product reproduces only on average
    grads = per_sample_grads(model, x, y)["head.weight"].flatten(1)
    exact = grads.T @ grads / len(x)
    expected = sum(torch.kron(torch.outer(d, d), torch.outer(a, a)) for a, d in zip(x, delta, strict=True)) / len(x)
    torch.testing.assert_close(exact, expected, rtol=1e-10, atol=1e-14)


def test_eigen_quantities_against_float64_reference():
    """Tiny MLP without BN: factors from an independent path (manual forward for Sigma_x, per-sample bias gradients
    = output gradients for Sigma_grad), spectra by numpy; Prop. 1 against the explicitly formed Kronecker matrix."""
    model = tiny_net()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (40,), generator=gen)
    records = measure(model, x, y, "empirical")
    grads = per_sample_grads(model, x, y)
    maps = measured_layers(model)
    names = {id(p): k for k, p in model.named_parameters()}
    a = x.numpy()
    assert len(records) == 3
    for k, (rec, m) in enumerate(zip(records, maps, strict=True)):
        delta = grads[names[id(m.bias)]].numpy()
        sx, sg = a.T @ a / len(a), delta.T @ delta / len(a)
        ex, eg = reference_eigs(sx), reference_eigs(sg)
        np.testing.assert_allclose(rec["eig_x"], ex, rtol=1e-9, atol=1e-14 * ex[0])
        np.testing.assert_allclose(rec["eig_g"], eg, rtol=1e-9, atol=1e-14 * eg[0])
        assert rec["lmax_x"] == pytest.approx(ex[0], rel=1e-10)
        kron = np.kron(sx, sg)
        ek = reference_eigs(kron)
        assert rec["lmax_kron"] == pytest.approx(ek[0], rel=1e-9)
        assert rec["lmax_kron"] == pytest.approx(rec["lmax_x"] * rec["lmax_g"], rel=1e-12)
        for i, p in enumerate(P_LEVELS):
            for name, eig in (("kron", ek), ("x", ex), ("g", eg)):
                low = eig[int(np.ceil(p * len(eig))) - 1]
                if low > 1e-8 * eig[0]:
                    assert rec[f"kappa_{name}"][i] == pytest.approx(eig[0] / low, rel=1e-6), (k, p, name)
                else:  # a (numerically) zero eigenvalue, e.g. of a dead ReLU unit: inf or beyond 1e10
                    assert rec[f"kappa_{name}"][i] > 1e7, (k, p, name)
        # Prop. 1 for the ordinary condition number (p = 100 %)
        if np.isfinite(rec["kappa_x"][-1] * rec["kappa_g"][-1]):
            assert rec["kappa_kron"][-1] == pytest.approx(rec["kappa_x"][-1] * rec["kappa_g"][-1], rel=1e-6)
        else:
            assert rec["kappa_kron"][-1] == np.inf
        # the exact Fisher block of the layer (per-sample weight gradients) vs its Kronecker approximation
        gw = grads[names[id(m.weight)]].flatten(1).numpy()
        exact = reference_eigs(gw.T @ gw / len(gw))
        assert 0.1 < exact[0] / rec["lmax_kron"] < 10
        a = np.maximum(a @ m.weight.detach().numpy().T + m.bias.detach().numpy(), 0)  # next layer's input


def test_exact_block_equals_kronecker_for_one_sample():
    """For a single example the exact block of every layer of a multi-layer net is the Kronecker product."""
    model = tiny_net(depth=3, seed=2)
    x, y = torch.randn(1, 4, dtype=torch.float64), torch.tensor([2])
    grads = per_sample_grads(model, x, y)
    names = {id(p): k for k, p in model.named_parameters()}
    for m, (sx, sg) in zip(measured_layers(model), layer_factors(model, x, y, "empirical"), strict=True):
        g = grads[names[id(m.weight)]][0].flatten()
        torch.testing.assert_close(torch.outer(g, g), torch.kron(sg, sx), rtol=1e-10, atol=1e-14)


def test_condition_numbers_edge_cases():
    eig = np.array([4.0, 2.0, 1.0, 0.0])
    assert kappa_p(eig, 0.5) == 2.0
    assert kappa_p(eig, 0.75) == 4.0
    assert kappa_p(eig, 1.0) == np.inf
    assert kappa_p(np.array([1.0, 1e-13]), 1.0) == np.inf
    assert kappa_nonzero(eig) == 4.0
    assert np.isnan(kappa_p(np.zeros(3), 1.0))


def test_measurement_leaves_bn_and_grads_alone(digits):
    cell = make_cell(depth=3, width=16, bn_variant="bn_gamma_beta")
    model = build_model(cell, digits.input_shape, digits.n_classes).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    records = measure(model, digits.train.x[:64], digits.train.y[:64], "sampled", torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert [len(r["eig_x"]) for r in records] == [64, 16, 16, 16] and len(records[-1]["eig_g"]) == 10


def test_conv_layers_use_channel_statistics(digits):
    cell = make_cell(model="cnn", depth=3, width=4)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    records = measure(model, digits.train.x[:32], digits.train.y[:32], "empirical")
    assert [len(r["eig_x"]) for r in records] == [1, 4, 4 * 64, 64]
    assert [len(r["eig_g"]) for r in records] == [4, 4, 64, 10]


def test_in_training_probe(digits, tmp_path):
    """Curvature measurements land in the training store as (step, layer[, p | eigen]) and do not change training."""
    common = dict(depth=3, width=16, steps=20, batch_size=32, log_every=10, eval_every=10, lr=1e-2)
    stores = {}
    for variant in ("bn_gamma_beta", "none"):  # BN first: a later cell lacks the first's `channel` dimension
        cell = make_cell(**common, bn_variant=variant, curvature_every=10, curvature_samples=200)
        model = build_model(cell, digits.input_shape, digits.n_classes)
        ds, _ = train_cell(cell, digits, model, torch.device("cpu"))
        assert ds["kappa_x"].dims == ("step", "layer", "p")
        assert ds["eig_x"].dims == ("step", "layer", "eigen") and ds.sizes["eigen"] == 64
        assert list(ds["step"].values) == [0, 10, 20] and list(ds["layer"].values) == [0, 1, 2, 3]
        assert np.isfinite(ds["lmax_x"]).all() and float(ds["curvature_seconds"]) > 0
        ds.attrs["config"] = variant
        stores[variant] = ds
        plain = make_cell(**common, bn_variant=variant)
        ref, _ = train_cell(plain, digits, build_model(plain, digits.input_shape, digits.n_classes),
                            torch.device("cpu"))
        np.testing.assert_array_equal(ref["loss"].values, ds["loss"].values)
        assert "kappa_x" not in ref
    study = combine_cells(stores, {"none": {"bn_variant": "none"}, "bn_gamma_beta": {"bn_variant": "bn_gamma_beta"}},
                          ["bn_variant"])
    assert study["log10_kappa_x"].dims == ("bn_variant", "step", "layer", "p")
    assert np.isfinite(study["log10_kappa90_x_final"]).all()
    for spec in ({"kind": "spectra", "var": "eig_x", "col": "bn_variant"},
                 {"kind": "spectra", "var": "eig_g", "col": "bn_variant", "select": {"step": 10}},
                 {"kind": "layer_step_heatmap", "var": "log10_kappa_g", "col": "bn_variant", "select": {"p": 0.9}}):
        save_plot(study, {"name": "x", **spec}, tmp_path / f"{spec['kind']}.png")
        assert (tmp_path / f"{spec['kind']}.png").stat().st_size > 1000


def test_weight_domination_ratio_and_frozen_weights(digits):
    """Definition 1's ratio sigma_max(dL/dW) / sigma_max(W) against the mean of per-sample gradients (float64), and
    `freeze_weights` keeps exactly the 0-digit layers' weights fixed while everything else trains."""
    model = tiny_net()
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    grads = per_sample_grads(model, x, y)
    names = {id(p): k for k, p in model.named_parameters()}
    for rec, m in zip(measure(model, x, y, "empirical"), measured_layers(model), strict=True):
        gw = grads[names[id(m.weight)]].mean(0).numpy()
        ref = np.linalg.norm(gw, 2) / np.linalg.norm(m.weight.detach().numpy(), 2)
        assert rec["domination"] == pytest.approx(ref, rel=1e-9)
    cell = make_cell(depth=2, width=16, steps=10, batch_size=32, log_every=5, eval_every=5, lr=1e-1,
                     optimizer="sgd", bn_variant="bn_gamma_beta", freeze_weights="010", curvature_every=5)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds, model = train_cell(cell, digits, model, torch.device("cpu"))
    after = model.state_dict()
    frozen = {"layers.0.0.weight", "head.weight"}
    for k, v in before.items():
        if k in frozen:
            torch.testing.assert_close(after[k], v, rtol=0, atol=0)
        elif k.endswith(("weight", "bias", "gamma", "beta")):
            assert not torch.equal(after[k], v), k
    assert ds["domination"].dims == ("step", "layer") and np.isfinite(ds["log10_domination"]).all()
    with pytest.raises(ConfigError, match="one digit per layer"):
        check_cell(make_cell(depth=2, freeze_weights="01"))


def test_factors_and_exact_block_against_curvlinops():
    """An independent implementation (curvlinops-for-pytorch): its empirical-Fisher K-FAC factors of every layer
    equal Sigma_x and Sigma_grad, its exact empirical-Fisher block of the output layer has our per-example
    lambda_max, and that block's spectrum is close to, not equal to, the Kronecker approximation's (paper 004,
    Fig. 2)."""
    from curvlinops import EFLinearOperator, KFACLinearOperator

    class Logits(nn.Module):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0]

    torch.manual_seed(0)
    model = tiny_net(depth=2)
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    weights = [m.weight for m in measured_layers(model)]
    kfac = KFACLinearOperator(Logits(model), nn.CrossEntropyLoss(), weights, [(x, y)], fisher_type="empirical",
                              check_deterministic=False)
    kfac.compute_kronecker_factors()
    ours = layer_factors(model, x, y, "empirical")
    for name, (sigma_x, sigma_g) in zip(kfac._input_covariances, ours, strict=True):
        torch.testing.assert_close(kfac._input_covariances[name], sigma_x, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(kfac._gradient_covariances[name], sigma_g, rtol=1e-12, atol=1e-15)
    head = model.head.weight
    exact = EFLinearOperator(Logits(model), nn.CrossEntropyLoss(), [head], [(x, y)], check_deterministic=False)
    exact_eigs = np.linalg.eigvalsh((exact @ torch.eye(head.numel(), dtype=torch.float64)).numpy())
    record = measure(model, x, y, "empirical")[-1]
    assert record["lmax_wgrad"] == pytest.approx(exact_eigs[-1], rel=1e-10)
    assert 0.25 < record["lmax_kron"] / exact_eigs[-1] < 4 and record["lmax_kron"] != pytest.approx(exact_eigs[-1])
