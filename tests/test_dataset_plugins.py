"""Datasets as a registry: the built-ins prepare byte-identical files to the ones before the registry (pinned
hashes), a declaration is checked against the arrays it prepares, and a dataset from outside the package
(tests/plugins/synthetic_images.py, the docs/PLUGINS.md example) runs through Snakemake end to end."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import ROOT, TINY_STUDY, snakemake, write_study

from layerlab.core.config import ConfigError
from layerlab.core.registry import DATASETS, DatasetSpec, load_plugins, register_dataset
from layerlab.core.sections import DataParams
from layerlab.core.store import read_store
from layerlab.data.datasets import DatasetUnavailable, load, prepare

PLUGIN = ROOT / "tests/plugins/synthetic_images.py"
# sha256 of the provenance file (.json) each built-in source wrote before datasets were a registry; it holds the
# sha256 of the arrays, so equal files mean equal arrays, equal provenance and an equal key order
PREPARED = {
    "digits": "e1bd39037f4bdf386c02797c67d970df1324c0846fc496fafd4cd4571cac40a9",
    "white_noise": "37ca6f0bc60ffa4059d4d57fbbae88fadef1beab63bc4683f3cbcf8916b70da0",
}
# the same for the downloaded sources, read from the stand-ins below (the Debian folder's path written as <debian>)
STAND_INS = {
    "mnist": "0cc5ce547c5fe772b97ea150cd6f675872f35e105ab932d31d5bb73a73de7762",
    "cifar10": "66398bca3b52270dd1fef8e371ef09d7b37e0acec61c002d28665ff28478c2f5",
    "cifar100": "a80d0de591fd7e9de575c77ff4380b2f2ce49cc976903ce29db3129444e7ce48",
    "fashion_mnist": "7d2a72390d638cf231515fcbec5c3bdb4b35b90e9e9c0e8ff81eaf09fa57403b",
    "fashion_mnist (Debian)": "f9167d32bf1ec522c9fd6e35ec37d757c9eed0701785562d468f1f5681929b9b",
}
TORCHVISION = {"MNIST": ((60_000, 10_000), (28, 28), 10), "FashionMNIST": ((60_000, 10_000), (28, 28), 10),
               "CIFAR10": ((50_000, 10_000), (32, 32, 3), 10), "CIFAR100": ((50_000, 10_000), (32, 32, 3), 100)}


def stand_in_images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    x = np.zeros((n, *shape), np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n) % 251
    return x


def stand_in(name: str) -> type:
    """A torchvision dataset class with the real split sizes and image layout (zeros, a counter, cycling labels)."""
    sizes, shape, classes = TORCHVISION[name]

    class StandIn:
        def __init__(self, root: str, train: bool, download: bool):
            n = sizes[0 if train else 1]
            self.data, self.targets = stand_in_images(n, shape), list(np.arange(n) % classes)

    return StandIn


def debian_folder(root: Path) -> Path:
    """Gzipped IDX files as Debian's dataset-fashion-mnist installs them."""
    root.mkdir()
    for split, n in (("train", 60_000), ("t10k", 10_000)):
        images = stand_in_images(n, (28, 28)).tobytes()
        labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">III", n, 28, 28) + images, 1))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", n) + labels, 1))
    return root


def prepared_hash(name: str, tmp_path: Path, debian: Path | None = None) -> str:
    """The .json's sha256, after checking that the .npz holds the arrays in their order and the same provenance."""
    npz = tmp_path / f"{name}.npz"
    prepare(name, npz, tmp_path / "downloads")
    text = npz.with_suffix(".json").read_text()
    with np.load(npz) as f:
        assert f.files == ["x_train", "y_train", "x_test", "y_test", "provenance"]
        assert str(f["provenance"]) == json.dumps(json.loads(text))
    if debian:
        text = text.replace(str(debian), "<debian>")
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", PREPARED)
def test_builtin_datasets_prepare_the_files_they_did_before_the_registry(tmp_path, name):
    assert prepared_hash(name, tmp_path) == PREPARED[name]


def test_downloaded_sources_prepare_the_files_they_did_before_the_registry(tmp_path, monkeypatch):
    for cls in TORCHVISION:
        monkeypatch.setattr(torchvision.datasets, cls, stand_in(cls))
    monkeypatch.setenv("LAYERLAB_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    got = {name: prepared_hash(name, tmp_path) for name in ("mnist", "cifar10", "cifar100", "fashion_mnist")}
    debian = debian_folder(tmp_path / "debian")
    monkeypatch.setenv("LAYERLAB_FASHION_MNIST_DIR", str(debian))
    got["fashion_mnist (Debian)"] = prepared_hash("fashion_mnist", tmp_path, debian)
    assert got == STAND_INS


def two_classes(spec: DatasetSpec, downloads: Path) -> tuple[dict, dict]:
    """Three 2 x 3 images of labels 0, 1, 1 in each split, as (N, H, W)."""
    x = np.arange(18, dtype=np.uint8).reshape(3, 2, 3)
    return {"x_train": x, "y_train": np.array([0, 1, 1]), "x_test": x, "y_test": np.array([1, 0, 1])}, {}


PROVENANCE = {"source": "hand-made", "license": "public domain", "split": "3/3", "scale": 17.0}


def declared(name: str, **changes) -> str:
    """Register `two_classes` as `name` with the right declaration but for `changes`."""
    register_dataset(name, **{"prepare": two_classes, "shape": (1, 2, 3), "classes": 2, "splits": (3, 3),
                              "provenance": PROVENANCE, **changes})
    return name


def test_a_declaration_is_checked_against_the_arrays_it_prepares(tmp_path):
    meta = prepare(declared("two_classes"), tmp_path / "ok.npz", tmp_path)
    assert meta["shapes"]["x_train"] == [3, 1, 2, 3] and meta["n_classes"] == 2 and meta["scale"] == 17.0
    data = load(tmp_path / "ok.npz", data=DataParams(input_scaling="unit"))
    assert data.input_shape == (1, 2, 3) and data.train.x.max().item() == 1.0  # 17 -> 1: the declared scale
    cases = {
        declared("wrong_shape", shape=(1, 3, 2)): r"x_train has shape \(3, 1, 2, 3\), declared \(3, 1, 3, 2\)",
        declared("wrong_splits", splits=(3, 4)): r"x_test has shape \(3, 1, 2, 3\), declared \(4, 1, 2, 3\) .*"
                                                 r"y_test has shape \(3,\), declared \(4,\)",
        declared("wrong_classes", classes=3): r"labels run 0..1, declared 3 classes \(0..2\)",
    }
    for name, message in cases.items():
        with pytest.raises(DatasetUnavailable, match=rf"^dataset '{name}' differs from its declaration: {message}"):
            prepare(name, tmp_path / f"{name}.npz", tmp_path)
        assert not (tmp_path / f"{name}.npz").exists()


def float_images(spec: DatasetSpec, downloads: Path) -> tuple[dict, dict]:
    arrays, _ = two_classes(spec, downloads)
    return {**arrays, "x_train": arrays["x_train"] / 17}, {}


def no_test_split(spec: DatasetSpec, downloads: Path) -> tuple[dict, dict]:
    arrays, _ = two_classes(spec, downloads)
    return {"x_train": arrays["x_train"], "y_train": arrays["y_train"]}, {}


def test_a_source_of_the_wrong_types_or_arrays_is_refused(tmp_path):
    with pytest.raises(DatasetUnavailable, match="dataset 'floats': x_train is float64; images are uint8"):
        prepare(declared("floats", prepare=float_images), tmp_path / "f.npz", tmp_path)
    with pytest.raises(DatasetUnavailable, match="dataset 'no_test': its source returned no x_test, y_test"):
        prepare(declared("no_test", prepare=no_test_split), tmp_path / "n.npz", tmp_path)


def test_a_declaration_without_license_or_of_the_wrong_shape_is_refused_at_registration():
    with pytest.raises(ConfigError, match=r"dataset 'anon': its provenance lacks license, split \(it needs source"):
        register_dataset("anon", two_classes, shape=(1, 2, 3), classes=2, splits=(3, 3),
                         provenance={"source": "somewhere", "scale": 1.0})
    with pytest.raises(ConfigError, match=r"dataset 'flat': shape is \(channels, height, width\)"):
        register_dataset("flat", two_classes, shape=(6,), classes=2, splits=(3, 3), provenance=PROVENANCE)
    assert "anon" not in DATASETS and "flat" not in DATASETS


def test_the_docs_show_the_plugin_file_verbatim():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/PLUGINS.md").read_text(), re.S)
    assert PLUGIN.read_text() in blocks


@pytest.mark.e2e
def test_outside_dataset_runs_end_to_end_through_snakemake(tmp_path):
    (tmp_path / "my_dataset.py").write_text(PLUGIN.read_text())  # a file beside the study, not in the package
    config = {**TINY_STUDY, "plugins": ["my_dataset.py"], "grid": {"depth": [1, 2]}, "cells": [],
              "fixed": {"dataset": "synthetic_images", "width": 32, "steps": 150, "batch_size": 32, "log_every": 50,
                        "eval_every": 50, "lr": 3e-3},
              "plots": [{"name": "accuracy", "kind": "metric_vs_axis", "metric": "test_acc", "x": "depth"}]}
    write_study(tmp_path, config)
    snakemake(tmp_path)
    meta = json.loads((tmp_path / "resources/datasets/synthetic_images.json").read_text())
    assert meta["shapes"]["x_train"] == [480, 1, 4, 4] and meta["n_classes"] == 3
    assert meta["license"] == "public domain (generated)" and "make_classification" in meta["source"]
    study = read_store(tmp_path / "results/tiny/metrics.zarr")
    assert (study["test_acc"] > 0.6).all(), study["test_acc"].values  # three classes: chance is 1/3
    init = torch.load(tmp_path / "results/tiny/cells/depth~1/init.pt", weights_only=False)
    assert init["input_shape"] == (1, 4, 4) and init["n_classes"] == 3
    assert (tmp_path / "results/tiny/figures/accuracy.png").stat().st_size > 1000

    config["fixed"]["batch_size"] = 481  # planning knows the declared training split: refused before any job
    write_study(tmp_path, config)
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "batch_size 481 is larger than the synthetic_images training split, 480 rows" in out
    assert "Traceback" not in out, out[-2000:]
    config["plugins"] = []  # without the plug-in the name is unknown, and the message lists the known datasets
    config["fixed"]["batch_size"] = 32
    write_study(tmp_path, config)
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "fixed.dataset: 'synthetic_images' is not one of ['digits'," in out, out[-2000:]


def test_the_plugin_dataset_is_learnable(tmp_path):
    load_plugins([str(PLUGIN)])
    prepare("synthetic_images", tmp_path / "s.npz", tmp_path)
    data = load(tmp_path / "s.npz")
    # least squares on one-hot labels: the classes are (mostly) linearly separable from the 16 pixels
    x = torch.cat([data.train.x.flatten(1), torch.ones(480, 1)], 1).double()
    w = torch.linalg.lstsq(x, torch.nn.functional.one_hot(data.train.y).double()).solution
    test = torch.cat([data.test.x.flatten(1), torch.ones(120, 1)], 1).double()
    assert (test @ w).argmax(1).eq(data.test.y).double().mean() > 0.6
