rule plots:
    """One seaborn figure of the config's `plots` per job: a figure that fails leaves the others in place."""
    input:
        rules.collect.output.store,
    output:
        report(f"{OUT}/figures/{{plot}}.png", caption="../report/plot.rst", category="Figures"),
    params:
        spec=lambda wildcards: canonical_json(PLOTS[wildcards.plot]),
        caption=lambda wildcards: PLOT_CAPTIONS[PLOTS[wildcards.plot]["kind"]],
    log:
        f"{OUT}/logs/plots/{{plot}}.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/plots.py"
