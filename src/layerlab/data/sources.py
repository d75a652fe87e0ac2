"""Where the built-in datasets come from: each function is the `prepare` of a `DatasetSpec` (declared in
layerlab.catalog.datasets) and returns the raw arrays and the provenance known only once read."""

from __future__ import annotations

import gzip
import os
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np

from layerlab.core.registry import DatasetSpec
from layerlab.data.datasets import DatasetUnavailable

Arrays = dict[str, np.ndarray]  # x_train, y_train, x_test, y_test
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file: magic byte 3 is the rank, then big-endian uint32 dims."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def digits(spec: DatasetSpec, downloads: Path) -> tuple[Arrays, dict]:
    """sklearn's 8 x 8 digits (values 0..16), a stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, {}


def offline_layout(cls: Any, downloads: Path) -> str:
    """Where torchvision's dataset class `cls` finds its files under `downloads` without a network."""
    if hasattr(cls, "resources"):  # MNIST family: the IDX files, gunzipped (torchvision checks only that they exist)
        files = ", ".join(f.removesuffix(".gz") for f, _ in cls.resources)
        return f"{downloads / cls.__name__ / 'raw'}/{{{files}}} (gunzip the .gz files of {cls.mirrors[0]})"
    return f"{downloads / cls.filename} (from {cls.url}), or its extracted folder {downloads / cls.base_folder}/"


def torchvision_download(spec: DatasetSpec, downloads: Path) -> tuple[Arrays, dict]:
    """The official splits of the torchvision dataset class `spec.options["torchvision"]`, downloaded once into
    `downloads`."""
    import torchvision

    cls = getattr(torchvision.datasets, spec.options["torchvision"])
    try:
        train = cls(str(downloads), train=True, download=True)
        test = cls(str(downloads), train=False, download=True)
    except (RuntimeError, urllib.error.URLError, OSError) as err:
        raise DatasetUnavailable(
            f"dataset '{spec.name}' is not prepared and the torchvision download into {downloads} failed "
            f"({type(err).__name__}: {err}). Run on a machine with internet access once, or place the "
            f"torchvision files there by hand: {offline_layout(cls, downloads)}."
        ) from err

    def arrays(split) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(split.data, dtype=np.uint8)
        return (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x), np.asarray(split.targets)  # NHWC -> NCHW

    (x_tr, y_tr), (x_te, y_te) = arrays(train), arrays(test)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}, {}


def fashion_mnist(spec: DatasetSpec, downloads: Path) -> tuple[Arrays, dict]:
    """FashionMNIST from Debian's dataset-fashion-mnist (offline; LAYERLAB_FASHION_MNIST_DIR overrides its
    folder), else the torchvision download."""
    debian = Path(os.environ.get("LAYERLAB_FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST))
    if all((debian / f).exists() for f in IDX_FILES.values()):
        arrays = {key: read_idx(debian / name) for key, name in IDX_FILES.items()}
        return arrays, {"source": f"Debian dataset-fashion-mnist at {debian}"}
    try:
        return torchvision_download(spec, downloads)
    except DatasetUnavailable as err:
        raise DatasetUnavailable(f"{err} Offline alternative: `apt-get install dataset-fashion-mnist` (Debian) "
                                 f"provides the real files.") from err.__cause__


def white_noise(spec: DatasetSpec, downloads: Path) -> tuple[Arrays, dict]:
    """Uniform uint8 pixels and uniform labels of the declared shape, splits and classes, seeded."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "test"), spec.splits, strict=True):
        arrays[f"x_{split}"] = rng.integers(0, 256, size=(n, *spec.shape), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, spec.classes, size=n, dtype=np.int64)
    return arrays, {}
