"""Built-in plot kinds (implementations: layerlab.report.plots)."""

from __future__ import annotations

from layerlab.core.registry import register_plot

KINDS = ("metric_vs_axis", "layer_step_heatmap", "layer_trajectories", "channel_step_heatmap", "phase_diagram",
         "layer_curves", "reconstructions", "spectra", "representation_layers", "layer_profile", "layer_accuracy",
         "regime_memory", "step_curves", "fisher_layers")
for kind in KINDS:
    register_plot(kind, f"layerlab.report.plots:{kind}")
