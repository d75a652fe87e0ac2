"""A test plug-in: a probe that raises at step 100 of the cells whose depth is $LAYERLAB_TEST_FAIL_DEPTH (a training job
failing mid-run, as layerlab.status must report it). It adds no cell parameter: loading it changes no cell, and in a
process without that variable it never runs."""

import os

from layerlab.core.registry import register_probe
from layerlab.probes.base import StepState, TrainingProbe

FAIL_AT = 100


class FailAt(TrainingProbe):
    def after_forward(self, state: StepState) -> None:
        if state.step == FAIL_AT:
            raise RuntimeError(f"injected failure at step {state.step}\nsecond line of the message")


register_probe("fail_at", FailAt, variables={}, keys=("depth",),
               enabled=lambda cell: str(cell.model.depth) == os.environ.get("LAYERLAB_TEST_FAIL_DEPTH"))
