"""Exact Fisher probe (paper 004, E1/E2): curvlinops' full F and empirical Fisher against an independent float64
torch.func computation from per-example Jacobians, the K-FAC factors against their closed form (Jacobians of the
logits with respect to each layer's pre-activations), with and without BatchNorm; the crop/resize input option;
config errors; one end-to-end Snakemake run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cell, snakemake, write_study
from torch import nn
from torch.func import functional_call, jacrev
from torch.nn import functional as F

from layerlab.catalog import check_cell
from layerlab.core.cell import cell_properties
from layerlab.core.config import ConfigError
from layerlab.core.sections import DataParams
from layerlab.core.store import read_store
from layerlab.data.datasets import Dataset, Split, crop_resize, input_shape, load, prepare
from layerlab.measurements.fisher import (
    FISHER_TYPES,
    Logits,
    analysis_copy,
    exact_fisher,
    fisher_weights,
    kfac_factors,
    run_fisher,
)
from layerlab.nets.layers import measured_layers
from layerlab.nets.models import build_model
from layerlab.probes.curvature import layer_factors, spectrum

N, C, SHAPE = 16, 3, (1, 3, 3)


def tiny(bn: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 2 x 4 bias-free ReLU MLP on 3 x 3 inputs (float64 analysis copy; BN gamma/beta moved off 1/0), 16 rows."""
    net = build_model(make_cell(depth=2, width=4, bias=False, bn_variant=bn, seed=seed), SHAPE, C)
    net = analysis_copy(net)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("gamma", "beta")):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
    x = torch.randn(N, *SHAPE, generator=gen, dtype=torch.float64)
    return net, x, torch.randint(0, C, (N,), generator=gen)


def curvature_of_logits(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """(N, C, C): diag(p) - p p^T (type2) or (p - e_y)(p - e_y)^T (empirical), per example."""
    p = torch.softmax(logits, 1)
    if kind == "type2":
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    g = p - F.one_hot(y, C).double()
    return g[:, :, None] * g[:, None, :]


def reference_fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """(1/N) sum_n J_n^T Lambda_n J_n from the full Jacobian of the batch's logits w.r.t. the weights (torch.func)."""
    names = [n for n, p in net.named_parameters() if any(p is w for w in fisher_weights(net))]
    params = {n: p.detach() for n, p in net.named_parameters()}

    def logits_of(w: list[torch.Tensor]) -> torch.Tensor:
        return functional_call(net, {**params, **dict(zip(names, w, strict=True))}, (x,))[0]

    jac = jacrev(logits_of)([params[n] for n in names])  # per weight: (N, C, *shape)
    j = torch.cat([t.flatten(2) for t in jac], 2)  # (N, C, P)
    lam = curvature_of_logits(logits_of([params[n] for n in names]).detach(), y, kind)
    return torch.einsum("ncp,ncd,ndq->pq", j, lam, j) / len(x)


def manual_forward(net: nn.Module, x: torch.Tensor, k: int, h_k: torch.Tensor | None = None):
    """The network by hand from its weights (BN with batch statistics): (logits, input of layer k); `h_k` replaces
    layer k's pre-activation output."""
    a, inp = x.flatten(1), None
    for i, (block, w) in enumerate(zip([*net.layers, net.head], fisher_weights(net), strict=True)):
        if i == k:
            inp = a
        h = a @ w.T if not (i == k and h_k is not None) else h_k
        if isinstance(block, nn.Sequential):  # Linear + BatchNorm
            bn = block[1]
            h = F.batch_norm(h, None, None, bn.gamma, bn.beta, training=True, eps=bn.eps)
        a = h if i == len(net.layers) else torch.relu(h)
    return a, inp


@pytest.mark.parametrize("bn", ["none", "bn_gamma_beta"])
@pytest.mark.parametrize("kind", FISHER_TYPES)
def test_exact_fisher_matches_torch_func_reference(bn, kind):
    net, x, y = tiny(bn)
    full = exact_fisher(net, x, y, kind)
    ref = reference_fisher(net, x, y, kind)
    assert full.shape == (9 * 4 + 4 * 4 + 4 * C,) * 2
    torch.testing.assert_close(full, ref, rtol=1e-10, atol=1e-14)
    if kind == "empirical":  # (1/N) G^T G of the per-example gradients: rank <= N
        assert (spectrum(full) > 1e-12 * spectrum(full)[0]).sum() <= N


@pytest.mark.parametrize("bn", ["none", "bn_gamma_beta"])
@pytest.mark.parametrize("kind", FISHER_TYPES)
def test_kfac_factors_match_closed_form(bn, kind):
    net, x, y = tiny(bn, seed=1)
    logits = manual_forward(net, x, 0)[0].detach()
    torch.testing.assert_close(logits, Logits(net)(x).detach(), rtol=1e-12, atol=1e-12)  # the hand-made forward
    lam = curvature_of_logits(logits, y, kind)
    for k, (a, g) in enumerate(kfac_factors(net, x, y, kind)):
        inp = manual_forward(net, x, k)[1].detach()
        h = inp @ fisher_weights(net)[k].detach().T
        jac = jacrev(lambda hk, k=k: manual_forward(net, x, k, hk)[0])(h)  # (N, C, N, d): d logits_n / d h_i
        torch.testing.assert_close(a, inp.T @ inp / N, rtol=1e-12, atol=1e-14)
        # G = (1/N) sum_n sum_i J_ni^T Lambda_n J_ni (BN: every row i; no BN: only i = n is non-zero)
        torch.testing.assert_close(g, torch.einsum("ncid,nce,niej->dj", jac, lam, jac.transpose(1, 2)) / N,
                                   rtol=1e-10, atol=1e-14)


def test_kfac_is_exact_for_one_example_and_agrees_with_the_training_probe():
    """Plain-net empirical factors equal those of the curvature probe (its delta_i = m dL_batch/dh_i, computed by
    other code); with one example every block of a Plain net's empirical Fisher is exactly G_k (x) A_k."""
    net = analysis_copy(build_model(make_cell(depth=2, width=4, bias=False), SHAPE, C))
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(N, *SHAPE, generator=gen, dtype=torch.float64), torch.randint(0, C, (N,), generator=gen)
    for (a, g), (sx, sg) in zip(kfac_factors(net, x, y, "empirical"), layer_factors(net, x, y, "empirical"),
                                strict=True):
        torch.testing.assert_close(a, sx, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(g, sg, rtol=1e-10, atol=1e-15)
    # the per-example gradient is vec(d a^T) = d (x) a, so one example gives F_k = (d d^T) (x) (a a^T) exactly
    full = exact_fisher(net, x[:1], y[:1], "empirical")
    start = 0
    for w, (a, g) in zip(fisher_weights(net), kfac_factors(net, x[:1], y[:1], "empirical"), strict=True):
        stop = start + w.numel()
        torch.testing.assert_close(full[start:stop, start:stop], torch.kron(g, a), rtol=1e-10, atol=1e-15)
        start = stop


def test_run_fisher_dataset_is_consistent():
    net, x, y = tiny("none")
    data = Dataset("toy", Split(x.float(), y), Split(x.float(), y), C)
    cell = make_cell(depth=2, width=4, bias=False, fisher_samples=N)
    ds = run_fisher(cell, data, {"init": net, "final": net}, torch.device("cpu"))
    assert ds["kappa_block"].dims == ("checkpoint", "fisher", "layer", "p")
    assert ds["lmax_full"].dims == ("checkpoint", "fisher") and int(ds["fisher_params"]) == 64
    ref = reference_fisher(net, x.float().double(), y, "type2")
    sel = ds.sel(checkpoint="init", fisher="type2")
    assert float(sel["lmax_full"]) == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-9)
    assert float(sel["lmax_block"][1]) == pytest.approx(float(torch.linalg.eigvalsh(ref[36:52, 36:52])[-1]),
                                                        rel=1e-9)
    a, g = kfac_factors(net, x.float().double(), y, "type2")[1]
    kron = torch.kron(g, a)
    error = torch.linalg.matrix_norm(ref[36:52, 36:52] - kron) / torch.linalg.matrix_norm(ref[36:52, 36:52])
    assert float(sel["kfac_rel_error"][1]) == pytest.approx(float(error), rel=1e-8)
    assert float(sel["lmax_kfac"][1]) == pytest.approx(float(torch.linalg.eigvalsh(kron)[-1]), rel=1e-9)
    assert (sel["log10_kappa_gap"] == sel["log10_kappa_full"] - sel["log10_kappa_block"].max("layer")).all()
    np.testing.assert_array_equal(ds["lmax_block"].sel(checkpoint="init"), ds["lmax_block"].sel(checkpoint="final"))


def test_crop_resize_input(tmp_path):
    path = tmp_path / "digits.npz"
    meta = prepare("digits", path, tmp_path)
    assert input_shape(meta, crop=6, resize=3) == (1, 3, 3) and input_shape(meta, 1, 6) == (1, 6, 6)
    full = load(path, data=DataParams(input_scaling="unit"))
    small = load(path, data=DataParams(input_scaling="unit", input_crop=6, input_resize=3))
    centre = full.train.x[:, :, 1:7, 1:7]
    expected = F.interpolate(centre, size=(3, 3), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(small.train.x, expected)
    torch.testing.assert_close(crop_resize(full.train.x, 6), centre)
    tiny = DataParams(input_scaling="unit", input_crop=6, input_resize=3, input_pool=3)
    assert load(path, data=tiny).input_shape == (1, 1, 1)
    with pytest.raises(ConfigError, match=r"input_crop 9 is larger than the digits images \(8x8\)"):
        check_cell(make_cell(input_crop=9))
    with pytest.raises(ConfigError, match="input_pool 4 is larger than the 3x3 images"):
        check_cell(make_cell(input_crop=6, input_resize=3, input_pool=4))


def test_config_errors():
    check_cell(make_cell(width=8, bias=False), ["fisher"])
    with pytest.raises(ConfigError, match="needs model 'fnn' and loss 'ce'"):
        check_cell(make_cell(model="cnn"), ["fisher"])
    with pytest.raises(ConfigError, match=r"fisher_samples 2000 is larger than the training split \(1437 rows\)"):
        check_cell(make_cell(width=8, fisher_samples=2000), ["fisher"])
    with pytest.raises(ConfigError, match="dense matrix over 25408 weights is too large"):
        check_cell(make_cell(depth=1, width=32, dataset="fashion_mnist"), ["fisher"])
    with pytest.raises(ConfigError, match=r"bias false .* needs model 'fnn'"):
        check_cell(make_cell(model="cnn", bias=False))
    assert tuple(cell_properties()["fisher_types"]["items"]["enum"]) == FISHER_TYPES  # one list of Fisher types


def test_bias_free_fnn():
    net = build_model(make_cell(depth=2, width=4, bias=False, bn_variant="bn"), SHAPE, C)
    assert all(m.bias is None for m in measured_layers(net))


STUDY = {
    "study": "tiny_fisher",
    "grid": {"bn_variant": ["bn_gamma_beta"]},
    "fixed": {"dataset": "digits", "input_crop": 6, "input_resize": 3, "input_scaling": "unit", "depth": 2,
              "width": 6, "bias": False, "optimizer": "sgd", "lr": 0.1, "batch_size": 64, "steps": 20,
              "log_every": 10, "eval_every": 10, "fisher_samples": 64},
    "measurements": ["fisher"],
    "plots": [{"name": "kappa", "kind": "fisher_layers", "hue": "bn_variant", "select": {"p": 0.5}}],
    "claims": [{"name": "full_above_blocks", "source": "test", "paper": "-", "metric": "log10_kappa_gap",
                "select": {"bn_variant": "bn_gamma_beta", "checkpoint": "init", "fisher": "type2", "p": 0.5},
                "op": ">", "value": -100.0}],
}


@pytest.mark.e2e
def test_fisher_probe_end_to_end(tmp_path: Path):
    write_study(tmp_path, STUDY)
    snakemake(tmp_path)
    out = tmp_path / "results/tiny_fisher"
    ds = read_store(out / "metrics.zarr")
    assert ds["kappa_block"].dims == ("bn_variant", "checkpoint", "fisher", "layer", "p")
    assert int(ds["fisher_params"].squeeze()) == 9 * 6 + 6 * 6 + 6 * 10 and int(ds["fisher_rows"].squeeze()) == 64
    assert np.isfinite(ds["lmax_full"]).all() and list(ds["fisher"].values) == list(FISHER_TYPES)
    assert (out / "figures/kappa.png").stat().st_size > 10_000
    claims = (out / "claims.csv").read_text()
    assert "full_above_blocks" in claims and "unreplicated,one seed: its value satisfies the claim" in claims


@pytest.mark.e2e
def test_bad_fisher_config_stops_before_any_job(tmp_path: Path):
    write_study(tmp_path, {**STUDY, "fixed": {**STUDY["fixed"], "fisher_samples": 5000}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0 and "fisher_samples 5000 is larger than the training split" in proc.stderr
    assert not (tmp_path / "results").exists()
