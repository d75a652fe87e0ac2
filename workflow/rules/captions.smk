rule captions:
    """Every figure's report caption, figures/<plot>.rst (layerlab.report.captions): the plot's own `caption:`, its
    kind's, and the variables it draws as the study store describes them. Apart from the figures: new words
    redraw nothing."""
    input:
        rules.collect.output.store,
    output:
        [f"{OUT}/figures/{plot}.rst" for plot in PLOTS],
    params:
        plots=canonical_json(list(PLOTS.values())),
        **plot_plugin_code(per_plot=False),
    log:
        f"{OUT}/logs/captions.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/captions.py"
