rule study_page:
    """The report's study page (layerlab.report.study_page): the study config as run, its grid, every cell's summary
    metrics in a sortable, filterable table, and the logs of diverged or untrainable cells, linked from their rows."""
    input:
        rules.collect.output.store,
    output:
        report(f"{OUT}/study.html", caption="../report/study_page.rst", category="Study"),
    params:
        logs=f"{OUT}/logs",
        config_digest=hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12],  # reruns it on a new config
    log:
        f"{OUT}/logs/study_page.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/study_page.py"
