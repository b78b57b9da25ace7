# Report: the run's provenance (config, backbones and their weights, packages, git commit) as
# report items; `snakemake --report report.html` gathers them with the tables and figures.

from nsdflow.report import provenance_stamp


rule provenance:
    input:
        manifests=expand("results/features/{backbone}.json", backbone=PLAN.backbones),
    output:
        html=report(
            "results/report/provenance.html",
            caption="../report/provenance.rst",
            category="1. Provenance",
            labels={"page": "run, packages and config"},
        ),
        features=report(
            "results/report/features.html",
            caption="../report/features.rst",
            category="2. Features",
            labels={"page": "backbones and weights"},
        ),
        json="results/report/provenance.json",
    params:
        config=canonical(config),
        manifests=" ".join(f"{b}=results/features/{b}.json" for b in PLAN.backbones),
        workflow_dir=workflow.basedir,
        stamp=provenance_stamp(workflow.basedir),  # git commit and package versions: rerun when they change
        code=code_version("report"),
    conda:
        ENV
    log:
        "logs/provenance.log",
    shell:
        "nsdflow provenance --config {params.config:q} --manifests {params.manifests}"
        " --workflow-dir {params.workflow_dir:q} --json {output.json} --html {output.html}"
        " --features-html {output.features} > {log} 2>&1"
