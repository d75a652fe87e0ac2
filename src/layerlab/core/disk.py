"""A write that fails says where and why: the path, the reason and the free space on its file system (a full disk
otherwise surfaces as torch's `[enforce fail at inline_container.cc:672] . unexpected pos 596160 vs 596112`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriteFailed(OSError):
    """A file could not be written; the message names it, the reason and the free space there."""


def free_space(path: str | os.PathLike) -> int:
    """Bytes free for an unprivileged writer on the file system of `path` (or of its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def size(n: float) -> str:
    """`0 B`, `12.3 kB`, `4.1 GB`."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an error of the write in the block into WriteFailed naming `path`, the reason and the free space."""
    try:
        yield
    except WriteFailed:
        raise
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        free = free_space(path)
        if isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        else:
            reason = "the disk is full" if free == 0 else (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WriteFailed(f"cannot write {path}: {reason} ({size(free)} free on its file system)") from err
