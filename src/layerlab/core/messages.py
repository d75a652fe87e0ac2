"""How every message names a place and suggests a fix (`where` a problem is, the `nearest` valid name) and says how
long something takes (`duration`)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


def where(path: Iterable) -> str:
    """`fixed.lr`, `grid.depth[1]`, `cells[2].lr`, `--config steps`, or `top level`."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text.replace("--config.", "--config ", 1) or "top level"


def nearest(name: str, valid: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest valid name (spelling, or initials: learning_rate -> lr), else ''."""
    valid = list(valid)
    match = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.7)
    initials = "".join(word[:1] for word in str(name).split("_"))
    match = match or ([initials] if "_" in str(name) and initials in valid else [])
    return f" (did you mean '{match[0]}'?)" if match else ""


def duration(seconds: float) -> str:
    """A compact duration for progress lines: `45s`, `12m05s`, `3h07m`, `2d04h`; `?` when unknown (NaN, inf)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit}{s % size // sub_size:02d}{sub}"
    return f"{s}s"
