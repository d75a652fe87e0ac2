"""Paper 001 (Øland's thesis) ch. 5 during training: the representation measures of
`layerlab.measurements.representation` (LSD train-fit and held-out, the linear probe's accuracies, k-redundancy,
selection entropy H(Y|Z_i)) at chosen training steps, on the same fixed class-balanced probe subsets as the
post-training measurement.

Steps: every `representation_every` (and the last) and the listed `representation_at`; at step s the network has
had s updates (the hook runs after the step's forward pass, before its backward). The measurement runs in eval mode
under no_grad and restores every module's train/eval flag; it draws no random numbers and touches neither the
weights nor the BatchNorm statistics, so training is the same with the probe on or off. Written to train.zarr as
`<measure>_dynamic` with dims (step, rep_layer) (rep_layer 0 = input X, 1..L = hidden layers, L + 1 = logits).
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from layerlab.catalog.measurements import REPRESENTATION_PER_LAYER, RepresentationParams
from layerlab.catalog.probes import DYNAMIC, RepresentationDynamicParams, representation_schedule
from layerlab.core.cell import Cell
from layerlab.data.datasets import Dataset
from layerlab.measurements.representation import measure, probe_rows
from layerlab.nets.layers import Network, eval_mode
from layerlab.probes.base import StepState, TrainingProbe, step_layer_dataset


class RepresentationDynamicProbe(TrainingProbe):
    def __init__(self, cell: Cell, model: Network, data: Dataset):
        super().__init__(cell, model, data)
        self.data = data
        self.schedule = representation_schedule(cell[RepresentationDynamicParams], cell.run.steps)
        self.rows = probe_rows(cell[RepresentationParams], cell.run.seed, data, data.train.x.device)
        self.records: dict[str, dict[int, np.ndarray]] = {name: {} for name in REPRESENTATION_PER_LAYER}
        self.seconds = 0.0

    def after_forward(self, state: StepState) -> None:
        if state.step not in self.schedule or state.step in self.records["lsd_train"]:
            return
        start = time.perf_counter()
        with eval_mode(state.model):
            values = measure(state.model, self.data, *self.rows, self.cell[RepresentationParams],
                             self.cell.model.activation)
        for name in REPRESENTATION_PER_LAYER:
            self.records[name][state.step] = values[name]
        self.seconds += time.perf_counter() - start

    def variables(self, steps: list[int]) -> xr.Dataset | None:
        measured = sorted(self.records["lsd_train"])
        ds = step_layer_dataset(measured, {f"{name}{DYNAMIC}": rec for name, rec in self.records.items()},
                                dim="rep_layer")
        return None if ds is None else ds.assign({f"representation{DYNAMIC}_seconds": self.seconds})
