"""Dataset preparation: real sources, checksums, provenance, clear errors."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from layerlab.core.sections import DataParams
from layerlab.data.datasets import DatasetCorrupt, DatasetUnavailable, load, prepare, read_provenance, verify
from layerlab.data.sources import DEBIAN_FASHION_MNIST, read_idx


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
    assert load(tmp_path / "digits.npz", data=DataParams(train_subset=100)).train.x.shape[0] == 100


def test_corrupted_or_missing_file_is_reported(tmp_path):
    with pytest.raises(DatasetUnavailable, match="missing; run the `dataset` rule"):
        load(tmp_path / "nope.npz")
    prepare("digits", tmp_path / "digits.npz", tmp_path / "dl")
    with np.load(tmp_path / "digits.npz") as f:
        arrays = dict(f)
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10
    np.savez(tmp_path / "digits.npz", **arrays)
    with pytest.raises(DatasetCorrupt, match="sha256 of its arrays differs"):
        load(tmp_path / "digits.npz")


def flip_byte(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["data", "zip header", "json"])
def test_flipped_byte_is_one_line_naming_the_files_and_the_fix(tmp_path, where):
    npz = tmp_path / "digits.npz"
    prepare("digits", npz, tmp_path / "dl")
    verify(npz)
    if where == "json":
        meta = json.loads(npz.with_suffix(".json").read_text())
        npz.with_suffix(".json").write_text(json.dumps({**meta, "sha256": "0" * 64}))
    else:
        flip_byte(npz, 40_000 if where == "data" else 2)
    for read in (load, verify, read_provenance):  # every reader, whatever the stamp says
        with pytest.raises(DatasetCorrupt) as err:
            read(npz)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{npz} is corrupted (")
        assert f"delete {npz} and {npz.with_suffix('.json')}" in msg and f"`snakemake {npz}`" in msg


def test_verification_is_cached_per_file_version_and_preparing_again_keeps_timestamps(tmp_path, monkeypatch):
    import layerlab.data.datasets as data

    npz = tmp_path / "digits.npz"
    prepare("digits", npz, tmp_path / "dl")
    times = [p.stat().st_mtime_ns for p in (npz, npz.with_suffix(".json"))]
    calls = []
    monkeypatch.setattr(data, "_read_verified", lambda p, f=data._read_verified: calls.append(p) or f(p))
    verify(npz)
    verify(npz)
    assert calls == []  # prepare() stamped this version: no hashing
    os.utime(npz)  # a new version (touched): hashed once, then stamped again
    verify(npz)
    verify(npz)
    assert calls == [npz]
    times = [p.stat().st_mtime_ns for p in (npz, npz.with_suffix(".json"))]
    npz.unlink()
    npz.with_suffix(".json").unlink()
    prepare("digits", npz, tmp_path / "dl")  # the same arrays again: the verified version's timestamps
    assert [p.stat().st_mtime_ns for p in (npz, npz.with_suffix(".json"))] == times
    verify(npz)
    assert calls == [npz]


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


@pytest.mark.parametrize(("name", "cls", "layout"), [
    ("mnist", "MNIST", "resources/downloads/MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                       "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte} (gunzip the .gz files of https://"),
    ("cifar10", "CIFAR10", "resources/downloads/cifar-10-python.tar.gz (from https://www.cs.toronto.edu/"),
    ("cifar100", "CIFAR100", "or its extracted folder resources/downloads/cifar-100-python/"),
])
def test_offline_message_gives_the_folder_layout(monkeypatch, name, cls, layout):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(getattr(torchvision.datasets, cls), "__init__", offline)
    with pytest.raises(DatasetUnavailable, match="place the torchvision files there by hand") as err:
        prepare(name, Path("x.npz"), Path("resources/downloads"))
    assert layout in str(err.value)


def test_offline_layout_is_where_torchvision_reads_without_network(tmp_path):
    """The gunzipped IDX files at the stated place are enough for torchvision (no download attempted)."""
    import torchvision

    raw = tmp_path / "FashionMNIST/raw"
    raw.mkdir(parents=True)
    data = np.zeros((3, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 3, 28, 28)
                                                         + data.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x03")
    assert len(torchvision.datasets.FashionMNIST(str(tmp_path), train=True, download=True)) == 3
