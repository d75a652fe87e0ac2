"""The built-in plug-ins' declarations (torch-free, so the Snakefile plans and checks a study without torch).

Each submodule declares one kind; the implementations live in the modules their references name.
"""

from layerlab.catalog import datasets, decision_heads, losses, measurements, models, plots, probes, regimes  # noqa: F401  (registers them)
from layerlab.catalog.checks import check_cell

__all__ = ["check_cell"]
