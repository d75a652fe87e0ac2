"""Where a study's training jobs write, relative to the run's working directory (the rules in workflow/rules/ name the
same paths: `OUT` is `results/<study>`), for the tools that read them while it runs: status and TensorBoard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerlab.core.config import STORE_FILE


def study_dir(study: str, workdir: Path = Path(".")) -> Path:
    return workdir / "results" / study


@dataclass(frozen=True)
class CellFiles:
    """One cell's files under its study's folder."""

    root: Path  # results/<study>
    cell: str

    @property
    def store(self) -> Path:
        """The train.zarr's root metadata file (its existence: the cell is trained)."""
        return self.root / "cells" / self.cell / "train.zarr" / STORE_FILE

    @property
    def log(self) -> Path:
        return self.root / "logs" / "train" / f"{self.cell}.log"

    @property
    def progress(self) -> Path:
        """The training job's progress record (layerlab.workflow.watch), not an output: it outlives a failed job."""
        return self.root / "progress" / f"{self.cell}.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard" / self.cell
