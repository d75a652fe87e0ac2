"""How every error message names a place and suggests a fix: `where` a problem is, the `nearest` valid name."""

from __future__ import annotations

import difflib
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
