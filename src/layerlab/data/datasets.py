"""Datasets: prepare once into an .npz with provenance, load as tensors on the training device.

Every prepared dataset holds uint8 images `x_train`/`x_test` of shape (N, C, H, W), int64 labels, and a
`scale` that maps the uint8 values to [0, 1]. Sources never substitute for each other: an unavailable
source raises `DatasetUnavailable` with a message that says how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only `load` needs torch: planning (the Snakefile's checksum checks) imports no torch
    import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "white_noise")
WHITE_NOISE_SHAPE = (1, 28, 28)
WHITE_NOISE_SIZES = (10_000, 2_000)
# (train, test) rows of each prepared dataset, known before any job (the config check refuses a batch_size larger
# than the training split); tests/test_data.py checks them against prepared files
SPLIT_SIZES = {"digits": (1437, 360), "fashion_mnist": (60_000, 10_000), "mnist": (60_000, 10_000),
               "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "white_noise": WHITE_NOISE_SIZES}
# side of each dataset's square images, known before any job (input_crop is checked against it)
IMAGE_SIDES = {"digits": 8, "fashion_mnist": 28, "mnist": 28, "cifar10": 32, "cifar100": 32,
               "white_noise": WHITE_NOISE_SHAPE[1]}


class DatasetUnavailable(RuntimeError):
    """The requested dataset source cannot be read here; the message says how to get it."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32 (N, C, H, W), standardized
    y: torch.Tensor  # int64 (N,)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def sha256_of(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file: magic byte 3 is the rank, then big-endian uint32 dims."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _digits() -> tuple[dict[str, np.ndarray], dict]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, d.target, test_size=0.2, random_state=0, stratify=d.target
    )
    arrays = {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}
    meta = {
        "source": "sklearn.datasets.load_digits (UCI optdigits test set, bundled with scikit-learn)",
        "license": "CC BY 4.0 (UCI Machine Learning Repository)",
        "split": "stratified 80/20, sklearn train_test_split(random_state=0)",
        "scale": 16.0,
    }
    return arrays, meta


def _idx_dir(root: Path) -> dict[str, np.ndarray]:
    return {key: read_idx(root / name) for key, name in IDX_FILES.items()}


def offline_layout(cls: type, downloads: Path) -> str:
    """Where torchvision's dataset class `cls` finds its files under `downloads` without a network."""
    if hasattr(cls, "resources"):  # MNIST family: the IDX files, gunzipped (torchvision checks only that they exist)
        files = ", ".join(f.removesuffix(".gz") for f, _ in cls.resources)
        return f"{downloads / cls.__name__ / 'raw'}/{{{files}}} (gunzip the .gz files of {cls.mirrors[0]})"
    return f"{downloads / cls.filename} (from {cls.url}), or its extracted folder {downloads / cls.base_folder}/"


def _torchvision(name: str, downloads: Path) -> dict[str, np.ndarray]:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    try:
        train = cls(str(downloads), train=True, download=True)
        test = cls(str(downloads), train=False, download=True)
    except (RuntimeError, urllib.error.URLError, OSError) as err:
        hint = (
            " Offline alternative: `apt-get install dataset-fashion-mnist` (Debian) provides the real files."
            if name == "fashion_mnist" else ""
        )
        raise DatasetUnavailable(
            f"dataset '{name}' is not prepared and the torchvision download into {downloads} failed "
            f"({type(err).__name__}: {err}). Run on a machine with internet access once, or place the "
            f"torchvision files there by hand: {offline_layout(cls, downloads)}.{hint}"
        ) from err

    def arrays(split) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(split.data, dtype=np.uint8)
        return (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x), np.asarray(split.targets)  # NHWC -> NCHW

    (x_tr, y_tr), (x_te, y_te) = arrays(train), arrays(test)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def _fashion_mnist(downloads: Path) -> tuple[dict[str, np.ndarray], dict]:
    debian = Path(os.environ.get("LAYERLAB_FASHION_MNIST_DIR", DEBIAN_FASHION_MNIST))
    meta = {"license": "MIT (Zalando Research)", "scale": 255.0, "split": "official 60k/10k"}
    if all((debian / f).exists() for f in IDX_FILES.values()):
        return _idx_dir(debian), {**meta, "source": f"Debian dataset-fashion-mnist at {debian}"}
    return _torchvision("fashion_mnist", downloads), {**meta, "source": "torchvision download"}


def _white_noise() -> tuple[dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "test"), WHITE_NOISE_SIZES, strict=True):
        arrays[f"x_{split}"] = rng.integers(0, 256, size=(n, *WHITE_NOISE_SHAPE), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, size=n, dtype=np.int64)
    meta = {"source": "generated: uniform uint8 pixels and uniform labels, numpy default_rng(0)",
            "license": "public domain (generated)", "scale": 255.0, "split": "10k/2k"}
    return arrays, meta


def build(name: str, downloads: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Return the raw arrays and provenance of dataset `name`."""
    if name == "digits":
        return _digits()
    if name == "fashion_mnist":
        return _fashion_mnist(downloads)
    if name == "white_noise":
        return _white_noise()
    if name in ("mnist", "cifar10", "cifar100"):
        return _torchvision(name, downloads), {
            "source": "torchvision download", "scale": 255.0, "split": "official train/test",
            "license": {"mnist": "CC BY-SA 3.0 (LeCun, Cortes, Burges)",
                        "cifar10": "MIT-style (Krizhevsky, Nair, Hinton)",
                        "cifar100": "MIT-style (Krizhevsky, Nair, Hinton)"}[name],
        }
    raise DatasetUnavailable(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")


def prepare(name: str, out: Path, downloads: Path) -> dict:
    """Write dataset `name` to `out` (.npz) and its provenance to `out` with suffix .json."""
    arrays, meta = build(name, downloads)
    arrays = {k: np.ascontiguousarray(v[:, None] if k.startswith("x") and v.ndim == 3 else v,  # -> NCHW
                                      dtype=np.uint8 if k.startswith("x") else np.int64)
              for k, v in arrays.items()}
    meta = {
        "dataset": name,
        **meta,
        "sha256": sha256_of(*(arrays[k] for k in sorted(arrays))),
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "n_classes": int(max(arrays["y_train"].max(), arrays["y_test"].max()) + 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays, provenance=np.array(json.dumps(meta)))
    tmp.replace(out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    stamp = _read_stamp(out)
    if stamp.get("sha256") == meta["sha256"]:
        # the same data as a verified earlier copy (e.g. one prepared again after corruption): keep that copy's
        # timestamps, so that Snakemake does not redo the cells computed from it
        for path in (out, out.with_suffix(".json")):
            os.utime(path, ns=(stamp[path.suffix][1],) * 2)
    _write_stamp(out, meta["sha256"])
    return meta


class DatasetCorrupt(DatasetUnavailable):
    """A prepared dataset does not match its provenance; the message names the files to delete."""


def _stamp_path(npz: Path) -> Path:
    return npz.with_name(f".{npz.stem}.verified.json")


def _file_ids(npz: Path) -> dict[str, list[int]]:
    """(size, mtime, ctime) of the .npz and the .json: any write changes the ctime, which, unlike the mtime (`touch
    -r`), nothing can set back."""
    ids = {}
    for path in (npz, npz.with_suffix(".json")):
        stat = path.stat()
        ids[path.suffix] = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
    return ids


def _read_stamp(npz: Path) -> dict:
    try:
        return json.loads(_stamp_path(npz).read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(npz: Path, sha256: str) -> None:
    tmp = npz.with_name(f".{npz.stem}.verified.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": sha256, **_file_ids(npz)}))
    tmp.replace(_stamp_path(npz))


def _corrupt(npz: Path, why: str) -> DatasetCorrupt:
    return DatasetCorrupt(f"{npz} is corrupted ({why}); delete {npz} and {npz.with_suffix('.json')}, prepare it "
                          f"again with `snakemake {npz}` (results computed from it are kept), then rerun")


def _read_verified(npz: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of a prepared dataset and its provenance, checked against the sha256 in the .json beside it."""
    try:
        meta = json.loads(npz.with_suffix(".json").read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _corrupt(npz, f"provenance {npz.with_suffix('.json')} unreadable: {type(err).__name__}") from None
    try:
        with np.load(npz) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            embedded = json.loads(str(f["provenance"])).get("sha256")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise _corrupt(npz, f"unreadable: {type(err).__name__}: {err}") from None
    if sha256_of(*(arrays[k] for k in sorted(arrays))) != expected or embedded != expected:
        raise _corrupt(npz, f"sha256 of its arrays differs from {npz.with_suffix('.json')}")
    return arrays, meta


def verify(npz_path: str | os.PathLike) -> None:
    """Check a prepared dataset against its provenance's sha256, at most once per version of the files: a stamp
    beside them records the (size, mtime, ctime) of the last verified pair. Raises DatasetCorrupt."""
    npz = Path(npz_path)
    if (stamp := _read_stamp(npz)) and {k: stamp.get(k) for k in (".npz", ".json")} == _file_ids(npz):
        return
    _write_stamp(npz, _read_verified(npz)[1]["sha256"])


def read_provenance(npz_path: str | os.PathLike) -> dict:
    """The provenance written beside a prepared dataset (shapes, classes, checksum, source), after `verify`."""
    verify(npz_path)
    return json.loads(Path(npz_path).with_suffix(".json").read_text())


def input_shape(meta: dict, pool: int = 1, crop: int = 0, resize: int = 0) -> tuple[int, ...]:
    """(channels, height, width) of the images a network sees: the provenance's shape, centre-cropped to `crop`
    pixels per side, resized to `resize`, then average-pooled by `pool` (0: no crop, no resize)."""
    channels, *size = meta["shapes"]["x_train"][1:]
    if crop > min(size):
        raise DatasetUnavailable(f"input_crop {crop} is larger than the {meta['dataset']} images {size}")
    size = [resize] * 2 if resize else [crop] * 2 if crop else size
    if pool > min(size):
        raise DatasetUnavailable(f"input_pool {pool} is larger than the {meta['dataset']} images {size}")
    return channels, *(n // pool for n in size)


def crop_resize(x: torch.Tensor, crop: int = 0, resize: int = 0) -> torch.Tensor:
    """(N, C, H, W) images centre-cropped to crop x crop pixels (0: kept) and resized to resize x resize (0: kept) by
    antialiased bilinear interpolation (paper 004's 12 x 12 MNIST: crop 20, resize 12, the seed notes' reading)."""
    import torch

    if crop:
        top, left = (x.shape[2] - crop) // 2, (x.shape[3] - crop) // 2
        x = x[:, :, top : top + crop, left : left + crop]
    if resize:
        x = torch.nn.functional.interpolate(x, size=(resize, resize), mode="bilinear", antialias=True,
                                            align_corners=False)
    return x


def load(path: Path, device: torch.device | str = "cpu", train_subset: int | None = None,
         test_subset: int | None = None, scaling: str = "standardize", pool: int = 1, crop: int = 0,
         resize: int = 0) -> Dataset:
    """Load a prepared dataset, verified against its provenance's sha256 (DatasetCorrupt). Pixels are mapped to
    [0, 1], centre-cropped to `crop`, resized to `resize` and average-pooled by `pool` (`crop_resize`; this is
    `scaling="unit"`), then, by default, standardized with the training split's mean and std over all pixels
    (`standardize`) or per channel (`standardize_channels`)."""
    import torch

    if not Path(path).exists():
        raise DatasetUnavailable(f"prepared dataset {path} is missing; run the `dataset` rule first")
    arrays, meta = _read_verified(Path(path))
    if train_subset:
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][:train_subset], arrays["y_train"][:train_subset]
    if test_subset:
        arrays["x_test"], arrays["y_test"] = arrays["x_test"][:test_subset], arrays["y_test"][:test_subset]
    input_shape(meta, pool, crop, resize)  # checks the crop and the pooling factor

    def pixels(x: np.ndarray) -> torch.Tensor:
        xt = crop_resize(torch.from_numpy(x).float() / meta["scale"], crop, resize)
        return torch.nn.functional.avg_pool2d(xt, pool) if pool > 1 else xt

    x_train, x_test = pixels(arrays["x_train"]), pixels(arrays["x_test"])
    over = {"standardize": None, "standardize_channels": (0, 2, 3), "unit": ()}[scaling]
    mean, std = (x_train.mean(over, keepdim=True), x_train.std(over, keepdim=True)) if over != () else (0.0, 1.0)

    def split(x: torch.Tensor, y: np.ndarray) -> Split:
        return Split(((x - mean) / std).to(device), torch.from_numpy(y).to(device))

    return Dataset(meta["dataset"], split(x_train, arrays["y_train"]), split(x_test, arrays["y_test"]),
                   meta["n_classes"])
