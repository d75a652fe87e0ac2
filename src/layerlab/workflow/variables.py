"""Which variables a study's store will hold: what the plug-ins a study's cells switch on declare."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from layerlab.catalog.checks import active_probes
from layerlab.catalog.regimes import RUN_VARIABLES
from layerlab.core.cell import Cell
from layerlab.core.config import axis_variable
from layerlab.core.registry import MEASUREMENTS, PROBES, REGIMES

STUDY = {"config", "trainable"}  # layerlab.core.store.combine_cells, layerlab.report.analysis.add_trainability


def study_variables(cells: Mapping[str, Cell], probes: list[str], axes: Iterable[str] = ()) -> set[str]:
    """Names of the data variables of the study store of `cells` (full parameters) measured with `probes` over the
    grid `axes`: a probe's or regime's declared variables may be absent in a cell (e.g. gamma without learnable
    BatchNorm)."""
    names = set(STUDY) | set(RUN_VARIABLES)
    for name in probes:
        names |= set(MEASUREMENTS[name].variables)
    for cell in cells.values():
        names |= set(REGIMES[cell.regime.training].variables)
        for probe in active_probes(cell):
            names |= set(PROBES[probe].variables)
    return {axis_variable(name, axes) for name in names}
