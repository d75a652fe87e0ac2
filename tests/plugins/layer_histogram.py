"""A plot kind from outside the package (docs/PLUGINS.md): the distribution of a per-layer variable over every layer
of every cell at one training step."""

import matplotlib.pyplot as plt
import numpy as np

from layerlab.core.registry import plot_option, plot_variable, register_plot


def layer_histogram(study, spec):
    """`spec` has every parameter declared below (defaults filled); `study` is the store, `select` applied."""
    da = study[spec["var"]]
    da = da.isel(step=-1) if spec["step"] is None else da.sel(step=spec["step"])
    values = da.values[np.isfinite(da.values)]
    fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
    ax.hist(values, bins=spec["bins"])
    ax.set(xlabel=spec["var"], ylabel="layers of all cells")
    return fig


register_plot(
    "layer_histogram", layer_histogram,
    caption="The distribution of a per-layer quantity over every layer of every cell at one training step.",
    parameters={
        "var": plot_variable("a (step, layer) variable", required=True),
        "step": plot_option("the training step (default: the last)", type=["integer", "null"], minimum=0,
                            default=None),
        "bins": plot_option("histogram bins", type="integer", minimum=1, default=20),
    },
)
