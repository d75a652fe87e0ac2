"""Built-in plot kinds: their parameters and captions (implementations: layerlab.report.plots).

A caption says what a kind's figure shows in any study; what it shows in one study (the paper's finding) is that
plot's own `caption:` in the study config, and the report adds both to the variables the figure draws.
"""

from __future__ import annotations

from layerlab.core.registry import PlotParam, plot_facet, plot_option, plot_variable, register_plot

LOGY = plot_option("log y axis", type="boolean", default=False)
LOGX = plot_option("log x axis", type="boolean", default=False)
ROW, COL = plot_facet("one row of panels per value"), plot_facet("one column of panels per value")
LAYERS = plot_option("0-based layers, one column each (default: about six, evenly spaced)",
                     type=["array", "null"], items={"type": "integer", "minimum": 0}, default=None)
STEPS = plot_option("training steps, one panel each (default: the first and the last with data)",
                    type=["array", "null"], items={"type": "integer", "minimum": 0}, default=None)


def _plot(name: str, caption: str, reads: tuple[str, ...] = (), needs_axes: tuple[str, ...] = (),
          **parameters: PlotParam) -> None:
    register_plot(name, f"layerlab.report.plots:{name}", " ".join(caption.split()), parameters, reads=reads,
                  needs_axes=needs_axes)


_plot("metric_vs_axis", """A per-cell final metric against one grid axis, one line per value of the colour axis:
      markers are the mean over seeds, the band one standard deviation across seeds.""",
      metric=plot_variable("per-cell scalar", required=True),
      x=plot_facet("the x axis", required=True, dims=("step", "eval_step", "layer")),
      hue=plot_facet("one line per value", dims=("step", "eval_step", "layer")), logx=LOGX)
_plot("layer_step_heatmap", """A per-layer quantity over training: one heatmap per cell (x: step, y: hidden layer, its
      own depth per panel), mean over seeds, one colour scale for all panels.""",
      var=plot_variable("(step, layer) variable", required=True), row=ROW, col=COL)
_plot("layer_trajectories", """A per-layer quantity over training steps, one line per layer, one panel per cell
      (mean over seeds). The colour of a layer is its depth in the network (dark: first, light: deepest of the
      figure), the same in every panel, as the colour bar shows.""",
      var=plot_variable("(step, layer) or (step, rep_layer) variable", required=True), row=ROW, col=COL, logy=LOGY)
_plot("channel_step_heatmap", """A per-channel quantity over training steps, one heatmap per panel (x: step, y:
      channel sorted by its final value), on one diverging colour scale centred at the neutral value (white), shared
      by all panels. First seed only: channels of different seeds do not correspond.""",
      var=plot_variable("(step, layer, channel) variable", required=True),
      row=plot_facet("one row of panels per value", dims=("layer",)),
      col=plot_facet("one column of panels per value", dims=("layer",)),
      center=plot_option("the neutral value at the centre of the colour scale", type="number", default=0.0))
_plot("phase_diagram", """Phase diagram (paper 003, Fig. 3): colour is the trained accuracy of each (sigma_w^2,
      depth) cell; cyan points are the reconstruction-entropy cutoff l* of the deepest untrained network at each
      sigma_w^2 (the cascade predicts a network trainable iff its depth <= l*); green lines are the mean-field
      correlation depth xi_c and 6 xi_c, the dotted line the order-to-chaos transition chi_1 = 1. The title gives
      the fraction of cells where prediction and training agree and the median cost of the cascade relative to
      training.""",
      metric=plot_variable("per-cell accuracy", required=True), needs_axes=("sigma_w2", "depth"))
_plot("layer_curves", """A per-layer measurement against the layer index, one line per value of the colour axis
      (blue to red in its order), seeds averaged.""",
      var=plot_variable("per-layer variable", required=True), hue=plot_facet("one line per value", required=True))
_plot("reconstructions", """A test image (left) and its reconstructions by the cascade from increasingly deep layers
      of the untrained network, one row per value of the row axis.""",
      row=plot_facet("one row per value", required=True), layers=LAYERS,
      image=plot_option("which stored test image", type="integer", minimum=0, default=0),
      reads=("reconstruction", "original"))
_plot("spectra", """Eigenvalue spectra, each divided by its largest eigenvalue, against the relative index i/d; one
      line per layer (dark: first layers), at the last measured step unless the plot selects one. A long tail of
      tiny or zero eigenvalues (drawn at 1e-16) means an ill-conditioned layer.""",
      var=plot_variable("(step, layer, eigen) variable", required=True), row=ROW, col=COL)
_plot("representation_layers", """A per-layer representation measure of a fixed class-balanced probe subset
      against the representation index: 0 is the input X, 1..L the hidden layers' outputs, L + 1 the logits; one
      line per value of the colour axis (by default the checkpoint: init, final), seeds averaged.""",
      var=plot_variable("(checkpoint, rep_layer) variable", required=True), row=ROW, col=COL,
      hue=plot_facet("one line per value", "checkpoint", dims=("checkpoint", "step")), logy=LOGY)
_plot("layer_profile", """A per-layer quantity against the layer index (the last index is the output layer), one
      line per value of the colour axis, one panel per training step (by default the first and the last step with
      data), seeds averaged.""",
      var=plot_variable("(step, layer) variable", required=True), row=ROW, hue=plot_facet("one line per value"),
      steps=STEPS, logy=LOGY)
_plot("layer_accuracy", """Layer-wise training (paper 001, Ch. 6): test accuracy of the temporary decision head
      trained on each layer's output, against the layer, one line per training regime (mean over seeds, band: one
      standard deviation). The last layer's head is the network's own output layer. Backprop has no per-layer
      heads: its final test accuracy is the dashed reference line.""",
      var=plot_variable("per-layer accuracy", "layer_test_acc"),
      metric=plot_variable("the final accuracy of a regime without per-layer values", "test_acc"),
      hue=plot_facet("one line per value", "training"))
_plot("regime_memory", """Peak memory of one training step per training regime (paper 001, Ch. 6), tracked on the
      step's tensors: activations saved for backward, resident parameters, gradients and optimizer state of the
      trained parameters, and the input batch; for the staged regimes the maximum over stages. Labels: MB and the
      ratio to the first bar. Right: the final metric of each bar (mean and standard deviation over seeds).""",
      metric=plot_variable("per-cell metric of the right panel", "test_acc"),
      x=plot_facet("one bar per value", "training"), hue=plot_facet("bars per (x, hue) pair"),
      reads=("peak_memory_parts",))
_plot("step_curves", """A per-step quantity over training, one line per value of the colour axis (mean over seeds,
      a band of one standard deviation with several), one panel per value of the column axis.""",
      var=plot_variable("(step) variable", required=True), hue=plot_facet("one line per value", required=True),
      col=COL, logy=LOGY)
_plot("fisher_layers", """Per layer, a spectral quantity (by default log10 kappa_p) of the exact diagonal block F_k
      of the Fisher (solid) and of its K-FAC approximation (dashed), and the same quantity of the exact full Fisher
      over all layers' weights (dotted), per Fisher type and checkpoint, one colour per value of the colour axis.""",
      var=plot_variable("the exact blocks' variable", "log10_kappa_block"),
      kfac=plot_variable("the K-FAC variable", "log10_kappa_kfac"),
      full=plot_variable("the full Fisher's variable", "log10_kappa_full"),
      row=plot_facet("one row of panels per value", "fisher", dims=("checkpoint", "fisher")),
      col=plot_facet("one column of panels per value", "checkpoint", dims=("checkpoint", "fisher")),
      hue=plot_facet("one colour per value", dims=("checkpoint", "fisher")))

