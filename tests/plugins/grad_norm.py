"""A layerlab plug-in from outside the package (docs/PLUGINS.md): the L2 norm of dL/dW of every layer's weight,
read after the training step's own backward, at the logged steps (NaN at the last one: no update there)."""

from dataclasses import dataclass

import numpy as np

from layerlab.core.params import Section, param
from layerlab.core.registry import register_probe
from layerlab.nets.layers import measured_layers
from layerlab.probes.base import StepState, TrainingProbe, step_layer_dataset


@dataclass(frozen=True)
class GradNormParams(Section):
    """The probe's own cell parameter (its switch)."""

    grad_norm_probe: bool = param(False, "record grad_norm (step, layer) at the logged steps", per_model=True)


class GradNorm(TrainingProbe):
    def __init__(self, cell, model, data):
        super().__init__(cell, model, data)
        self.layers = measured_layers(model)  # the Linear/Conv map of every hidden layer, then the output layer
        self.records: dict[int, np.ndarray] = {}

    def after_backward(self, state: StepState) -> None:
        if state.logged:
            self.records[state.step] = np.array([float(m.weight.grad.norm()) for m in self.layers])

    def variables(self, steps: list[int]):
        return step_layer_dataset(steps, {"grad_norm": self.records})


register_probe(
    "grad_norm", GradNorm,
    variables={"grad_norm": ("L2 norm of dL/dW of the layer's weight (training mini-batch)", "1")},
    enabled=lambda cell: cell[GradNormParams].grad_norm_probe, keys=("grad_norm_probe",), layer_maps=True,
    packs=True, parameters=GradNormParams,
)
