"""Weight entropy / bits per weight (paper 001, ch. 3): quantizer round trip, entropy vs scipy, Huffman lengths vs an
independent tree construction and the bound H <= L < H + 1, the in-training probe and the compression."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
import torch
from conftest import changed, make_cell
from scipy.stats import entropy

from layerlab.catalog import check_cell
from layerlab.core.config import ConfigError
from layerlab.nets.models import build_model
from layerlab.probes.weight_entropy import (
    WeightCompressionProbe,
    compress,
    dequantize,
    entropy_bits,
    histogram,
    huffman_bits,
    huffman_lengths,
    quantize,
)
from layerlab.training.loop import train_cell


def reference_code(counts: list[int]) -> dict[int, str]:
    """Huffman codewords by explicit tree building (nodes are nested tuples, codes read off by a tree walk)."""
    tiebreak = itertools.count()
    heap = [(c, next(tiebreak), s) for s, c in enumerate(counts) if c > 0]
    heapq.heapify(heap)
    if len(heap) == 1:
        return {heap[0][2]: ""}
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        heapq.heappush(heap, (a[0] + b[0], next(tiebreak), (a[2], b[2])))
    codes: dict[int, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, tuple):
            walk(node[0], prefix + "0")
            walk(node[1], prefix + "1")
        else:
            codes[node] = prefix

    walk(heap[0][2], "")
    return codes


HISTOGRAMS = [[5, 9, 12, 13, 16, 45], [1, 1, 1, 1], [1, 2, 4, 8, 16, 32, 64, 128], [0, 7, 0, 3, 0, 0, 1, 1],
              [100, 1], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 1000]]


@pytest.mark.parametrize("counts", HISTOGRAMS)
def test_entropy_matches_scipy(counts):
    assert entropy_bits(np.array(counts)) == pytest.approx(entropy(counts, base=2), rel=1e-12)


@pytest.mark.parametrize("counts", HISTOGRAMS)
def test_huffman_length_matches_a_tree_code_and_the_entropy_bound(counts):
    counts = np.array(counts)
    codes = reference_code(list(counts))
    words = list(codes.values())
    assert not any(a != b and b.startswith(a) for a, b in itertools.product(words, words))  # prefix-free
    reference = sum(counts[s] * len(w) for s, w in codes.items()) / counts.sum()
    assert huffman_bits(counts) == pytest.approx(reference, rel=1e-12)
    lengths = huffman_lengths(counts)
    assert (lengths[counts == 0] == 0).all() and sum(2.0 ** -lengths[counts > 0]) == pytest.approx(1.0)  # Kraft
    h = entropy(counts, base=2)
    assert h - 1e-12 <= huffman_bits(counts) < h + 1


def test_textbook_huffman_example_and_degenerate_alphabet():
    # CLRS 16.3: frequencies 45, 13, 12, 16, 9, 5 -> 224 bits per 100 characters
    assert huffman_bits(np.array([45, 13, 12, 16, 9, 5])) == pytest.approx(2.24)
    assert huffman_bits(np.array([0, 12, 0])) == 0.0 and entropy_bits(np.array([0, 12, 0])) == 0.0


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantizer_round_trip_is_within_half_a_bin_and_not_mirrored(bits):
    w = torch.randn(1000, generator=torch.Generator().manual_seed(0)) ** 3  # skewed: a mirror would show
    i, w_min, w_max = quantize(w, bits)
    width = (w_max - w_min) / 2**bits
    assert int(i.min()) == 0 and int(i.max()) == 2**bits - 1  # w_min and w_max land in the end bins
    assert int(i[w.argmin()]) == 0 and int(i[w.argmax()]) == 2**bits - 1
    back = dequantize(i, w_min, w_max, bits, torch.float64)
    assert float((back - w.double()).abs().max()) <= width / 2 * (1 + 1e-9)
    assert torch.equal(compress(w, bits), back.float())
    # bin edges by numpy's histogram (same equal-width bins over [min, max]) give the same counts
    np.testing.assert_array_equal(histogram(w, bits), np.histogram(w.double().numpy(), bins=2**bits)[0])


def test_constant_weights_have_zero_entropy():
    w = torch.full((5, 5), 0.3)
    assert torch.equal(compress(w, 4), w) and histogram(w, 4)[0] == 25


def test_uniform_weights_have_about_n_bits():
    w = torch.rand(200_000, generator=torch.Generator().manual_seed(1))
    assert entropy_bits(histogram(w, 4)) == pytest.approx(4.0, abs=1e-3)



def train(cell, data):
    torch.set_num_threads(1)
    return train_cell(cell, data, build_model(cell, data.input_shape, data.n_classes), torch.device("cpu"))


def test_in_training_probe_records_every_layer_at_the_logged_steps(digits):
    cell = make_cell(depth=2, width=16, steps=20, log_every=10, weight_entropy_bits=4, activation="tanh",
                     loss="mse", optimizer="sgd", lr=0.1, momentum=0.9)
    ds, model = train(cell, digits)
    assert ds["weight_entropy"].dims == ("step", "layer") and ds.sizes["layer"] == 3
    assert list(ds["step"].values) == [0, 10, 20] and "grad_rms" not in ds
    final = [model.layers[0].weight, model.layers[1].weight, model.head.weight]
    np.testing.assert_allclose(ds["weight_entropy"].sel(step=20).values,
                               [entropy(histogram(w, 4), base=2) for w in final], rtol=1e-5)
    assert ((ds["weight_entropy"] <= ds["huffman_bits"] + 1e-6) & (ds["huffman_bits"] < ds["weight_entropy"] + 1)).all()
    assert (ds["weight_entropy"] <= 4).all()


def test_compression_leaves_at_most_2_to_the_n_values_per_layer(digits):
    cell = make_cell(depth=2, width=16, steps=6, log_every=3, quantize_bits=2, quantize_every=3, optimizer="sgd",
                     lr=0.05)
    _, model = train(cell, digits)  # the last compression is after update 6 (0-based step 5)
    for m in [*model.layers, model.head]:
        assert len(torch.unique(m.weight)) <= 4 and len(torch.unique(m.bias)) <= 4
    _, plain = train(changed(cell, quantize_bits=0), digits)
    assert len(torch.unique(plain.layers[0].weight)) > 100


def test_probes_off_by_default_leave_the_store_unchanged(digits):
    ds, _ = train(make_cell(depth=2, width=8, steps=2, log_every=1), digits)
    assert not {"grad_rms", "weight_entropy", "huffman_bits"} & set(ds) and ds.sizes["layer"] == 2


def test_dynamic_bits_follow_the_entropy_rule_and_bit_rates_are_recorded(digits):
    """N = min(ceiling, ceil(H_4 + c)) per layer (thesis section 3.5), H_4 from numpy's histogram and scipy."""
    cell = make_cell(depth=2, width=16, steps=10, log_every=5, quantize_bits=10, quantize_floor=2.5,
                     quantize_every=5, weight_entropy_bits=4, optimizer="sgd", lr=0.05)
    model = build_model(cell, digits.input_shape, digits.n_classes)
    probes = WeightCompressionProbe(cell, model, digits)
    weights = [model.layers[0].weight, model.layers[1].weight, model.head.weight]
    h = [entropy(np.histogram(w.detach().double().numpy(), bins=16)[0], base=2) for w in weights]
    assert probes.compression_bits() == [min(10, int(np.ceil(x + 2.5))) for x in h]
    ds, _ = train(cell, digits)
    assert np.isnan(ds["sent_bits"].sel(step=0)).all()  # no compression before the first 5 updates
    sent, huff = ds["sent_bits"].sel(step=[5, 10]), ds["sent_huffman_bits"].sel(step=[5, 10])
    assert ((sent >= 3) & (sent <= 7)).all() and (huff <= sent).all() and (huff > 0).all()
    fixed, _ = train(changed(cell, quantize_floor=None, quantize_bits=3), digits)
    assert (fixed["sent_bits"].sel(step=[5, 10]) == 3).all()


def test_dynamic_bits_need_a_ceiling_and_an_entropy_estimate():
    with pytest.raises(ConfigError, match="quantize_floor"):
        check_cell(make_cell(quantize_floor=5, quantize_bits=10))
    check_cell(make_cell(quantize_floor=5, quantize_bits=10, weight_entropy_bits=4))
