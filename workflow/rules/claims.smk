rule claims:
    """The study's claims (config `claims:`) checked on the study store: claims.csv, one row per claim with its
    verdict (a claim that fails is a row, not a failed job), and claims.rst, the report's opening section."""
    input:
        store=rules.collect.output.store,
    output:
        table=report(f"{OUT}/claims.csv", caption="../report/claims.rst", category="Claims"),
        rst=f"{OUT}/claims.rst",
    params:
        claims=canonical_json(config["claims"]),
        scale=config["scale"],
    log:
        f"{OUT}/logs/claims.log",
    conda:
        "../../envs/layerlab.yaml"
    script:
        "../../scripts/claims.py"
