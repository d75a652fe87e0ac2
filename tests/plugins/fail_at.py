"""A test plug-in: a probe that raises at the step `fail_at_step` (a training job failing mid-run, as layerlab.status
must report it)."""

from layerlab.core.registry import register_probe
from layerlab.probes.base import StepState, TrainingProbe


class FailAt(TrainingProbe):
    def after_forward(self, state: StepState) -> None:
        if state.step == self.cell["fail_at_step"]:
            raise RuntimeError(f"injected failure at step {state.step}\nsecond line of the message")


register_probe(
    "fail_at", FailAt, variables={}, enabled=lambda cell: cell["fail_at_step"] >= 0, keys=("fail_at_step",),
    parameters={"fail_at_step": {"type": "integer", "default": -1,
                                 "description": "raise at this step (-1: never), to test failure reports"}},
)
