"""What every job script does first: pick the device, pin torch threads, make CPU runs deterministic."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch


def device() -> torch.device:
    """CUDA when available (overridable with LAYERLAB_DEVICE=cpu|cuda), else CPU."""
    name = os.environ.get("LAYERLAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(threads: int) -> torch.device:
    """One job = `threads` torch threads (parallel jobs must not oversubscribe the cores)."""
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    return device()


def run_script(main: Callable[[], None], *expected: type[Exception]) -> None:
    """Run a job's main; an expected error ends the job with its message alone, not a traceback."""
    try:
        main()
    except expected as err:
        sys.exit(f"layerlab: {err}")
