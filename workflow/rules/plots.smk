rule plots:
    """One seaborn figure of the config's `plots` per job: a figure that fails leaves the others in place. It sits in
    the report under the plot's `section` (the paper's section it reproduces)."""
    input:
        rules.collect.output.store,
    output:
        report(f"{OUT}/figures/{{plot}}.png", caption="../report/plot.rst",
               category=lambda wildcards: PLOTS[wildcards.plot]["section"]),
    params:
        spec=plot_spec,
        **plot_plugin_code(per_plot=True),
    log:
        f"{OUT}/logs/plots/{{plot}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/plots.py"
