"""Datasets: prepare once into an .npz with provenance, load as tensors on the training device.

Every prepared dataset holds uint8 images `x_train`/`x_test` of shape (N, C, H, W), int64 labels, and a
`scale` that maps the uint8 values to [0, 1]. A dataset is a registered `DatasetSpec` (layerlab.catalog.datasets
declares the built-ins, a study's plug-in may add more); its `prepare` reads the source. Sources never substitute
for each other: an unavailable source raises `DatasetUnavailable` with a message that says how to get it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from layerlab.core.config import ConfigError
from layerlab.core.registry import DATASETS, DatasetSpec, network_input, resolve
from layerlab.core.sections import DataParams

if TYPE_CHECKING:  # only `load` needs torch: planning (the Snakefile's checksum checks) imports no torch
    import torch

ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # in the order they are written


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


def as_written(spec: DatasetSpec, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays a source returned as they are written: images (N, C, H, W) uint8, labels int64, in ARRAYS order,
    checked against the dataset's declaration (shape, splits, classes)."""
    if missing := [k for k in ARRAYS if k not in raw]:
        raise DatasetUnavailable(f"dataset '{spec.name}': its source returned no {', '.join(missing)}")
    arrays = {k: np.asarray(raw[k]) for k in ARRAYS}
    wrong = [f"{k} is {a.dtype}" for k, a in arrays.items()
             if not (a.dtype == np.uint8 if k.startswith("x") else np.issubdtype(a.dtype, np.integer))]
    if wrong:
        raise DatasetUnavailable(f"dataset '{spec.name}': {', '.join(wrong)}; images are uint8 (values 0..scale), "
                                 f"labels integers")
    arrays = {k: np.ascontiguousarray(a[:, None] if k.startswith("x") and a.ndim == 3 else a,  # -> NCHW
                                      dtype=np.uint8 if k.startswith("x") else np.int64) for k, a in arrays.items()}
    if problems := mismatches(spec, arrays):
        raise DatasetUnavailable(f"dataset '{spec.name}' differs from its declaration: {'; '.join(problems)}")
    return arrays


def mismatches(spec: DatasetSpec, arrays: dict[str, np.ndarray]) -> list[str]:
    """How prepared arrays differ from the declared shape, splits and classes (planning relied on them)."""
    problems = []
    for split, rows in zip(("train", "test"), spec.splits, strict=True):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape != (rows, *spec.shape):
            problems.append(f"x_{split} has shape {x.shape}, declared {(rows, *spec.shape)} (splits, shape)")
        if y.shape != (rows,):
            problems.append(f"y_{split} has shape {y.shape}, declared ({rows},)")
    labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    if labels.size and (labels.min() < 0 or labels.max() + 1 != spec.classes):
        problems.append(f"labels run {labels.min()}..{labels.max()}, declared {spec.classes} classes "
                        f"(0..{spec.classes - 1})")
    return problems


def prepare(name: str, out: Path, downloads: Path) -> dict:
    """Write dataset `name` (its registered source, DATASETS) to `out` (.npz) and its provenance to `out` with
    suffix .json."""
    if name not in DATASETS:
        raise DatasetUnavailable(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    raw, details = resolve(spec.prepare)(spec, downloads)
    arrays = as_written(spec, raw)
    meta = {
        "dataset": name,
        **spec.provenance,
        **details,  # may say more precisely what the declaration says (e.g. which source was read)
        "sha256": sha256_of(*(arrays[k] for k in sorted(arrays))),
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "n_classes": int(spec.classes),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.npz")
    payload: dict[str, Any] = {**arrays, "provenance": np.array(json.dumps(meta))}
    np.savez(tmp, **payload)
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
            arrays = {k: f[k] for k in ARRAYS}
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
    try:
        return network_input(meta["dataset"], meta["shapes"]["x_train"][1:], pool, crop, resize)
    except ConfigError as err:
        raise DatasetUnavailable(str(err)) from None


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


def load(path: Path, device: torch.device | str = "cpu", data: DataParams | None = None) -> Dataset:
    """Load a prepared dataset as `data` reads it (default: all rows, standardized), verified against its
    provenance's sha256 (DatasetCorrupt). Pixels are mapped to [0, 1], centre-cropped to `input_crop`, resized to
    `input_resize` and average-pooled by `input_pool` (`crop_resize`; this is `input_scaling: unit`), then, by
    default, standardized with the training split's mean and std over all pixels (`standardize`) or per channel
    (`standardize_channels`)."""
    import torch

    data = data or DataParams()
    pool, crop, resize = data.input_pool, data.input_crop, data.input_resize
    if not Path(path).exists():
        raise DatasetUnavailable(f"prepared dataset {path} is missing; run the `dataset` rule first")
    arrays, meta = _read_verified(Path(path))
    if n := data.train_subset:
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][:n], arrays["y_train"][:n]
    if n := data.test_subset:
        arrays["x_test"], arrays["y_test"] = arrays["x_test"][:n], arrays["y_test"][:n]
    input_shape(meta, pool, crop, resize)  # checks the crop and the pooling factor

    def pixels(x: np.ndarray) -> torch.Tensor:
        xt = crop_resize(torch.from_numpy(x).float() / meta["scale"], crop, resize)
        return torch.nn.functional.avg_pool2d(xt, pool) if pool > 1 else xt

    x_train, x_test = pixels(arrays["x_train"]), pixels(arrays["x_test"])
    over = {"standardize": None, "standardize_channels": (0, 2, 3), "unit": ()}[data.input_scaling]
    mean, std = (x_train.mean(over, keepdim=True), x_train.std(over, keepdim=True)) if over != () else (0.0, 1.0)

    def split(x: torch.Tensor, y: np.ndarray) -> Split:
        return Split(((x - mean) / std).to(device), torch.from_numpy(y).to(device))

    return Dataset(meta["dataset"], split(x_train, arrays["y_train"]), split(x_test, arrays["y_test"]),
                   meta["n_classes"])
