"""Dataset preparation: real sources, checksums, provenance, clear errors."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from layerlab.data import DEBIAN_FASHION_MNIST, DatasetUnavailable, load, prepare, read_idx


def test_digits_prepared_with_provenance(tmp_path):
    meta = prepare("digits", tmp_path / "digits.npz", tmp_path / "dl")
    assert meta["shapes"] == {"x_train": [1437, 1, 8, 8], "y_train": [1437], "x_test": [360, 1, 8, 8],
                              "y_test": [360]}
    assert meta["n_classes"] == 10 and "sklearn" in meta["source"] and len(meta["sha256"]) == 64
    assert json.loads((tmp_path / "digits.json").read_text()) == meta
    data = load(tmp_path / "digits.npz")
    assert data.input_shape == (1, 8, 8) and data.train.x.dtype.is_floating_point
    assert abs(data.train.x.mean().item()) < 1e-5 and data.train.x.std().item() == pytest.approx(1.0, rel=1e-4)
    assert np.bincount(data.test.y.numpy()).min() >= 35  # stratified split
    # prepared twice -> identical bytes (checksum), subsets are prefixes
    assert prepare("digits", tmp_path / "again.npz", tmp_path / "dl")["sha256"] == meta["sha256"]
    assert load(tmp_path / "digits.npz", train_subset=100).train.x.shape[0] == 100


def test_corrupted_or_missing_file_is_reported(tmp_path):
    with pytest.raises(DatasetUnavailable, match="missing; run the `dataset` rule"):
        load(tmp_path / "nope.npz")
    prepare("digits", tmp_path / "digits.npz", tmp_path / "dl")
    with np.load(tmp_path / "digits.npz") as f:
        arrays = dict(f)
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10
    np.savez(tmp_path / "digits.npz", **arrays)
    with pytest.raises(DatasetUnavailable, match="corrupted"):
        load(tmp_path / "digits.npz")


def test_white_noise_is_seeded(tmp_path):
    a = prepare("white_noise", tmp_path / "a.npz", tmp_path / "dl")
    b = prepare("white_noise", tmp_path / "b.npz", tmp_path / "dl")
    assert a["sha256"] == b["sha256"] and a["shapes"]["x_train"] == [10000, 1, 28, 28]


def test_idx_reader_against_handmade_file(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 4) + data.tobytes()))
    np.testing.assert_array_equal(read_idx(path), data)


def test_unknown_and_unavailable_sources(tmp_path, monkeypatch):
    with pytest.raises(DatasetUnavailable, match="unknown dataset 'imagenet'"):
        prepare("imagenet", tmp_path / "x.npz", tmp_path / "dl")
    monkeypatch.setenv("LAYERLAB_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        prepare("fashion_mnist", tmp_path / "f.npz", tmp_path / "dl")
    assert not (tmp_path / "f.npz").exists()


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST).exists(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    meta = prepare("fashion_mnist", tmp_path / "fm.npz", tmp_path / "dl")
    assert meta["shapes"]["x_train"] == [60000, 1, 28, 28] and meta["shapes"]["x_test"] == [10000, 1, 28, 28]
    with np.load(tmp_path / "fm.npz") as f:
        x, y = f["x_train"], f["y_train"]
    assert y[0] == 9 and (np.bincount(y) == 6000).all()  # first label "ankle boot", balanced classes
    assert x.mean() / 255 == pytest.approx(0.2860, abs=1e-3)  # known FashionMNIST pixel statistics
    assert (x / 255).std() == pytest.approx(0.3530, abs=1e-3)
