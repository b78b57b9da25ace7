# Report: the scores as a page, the figures, and the run's provenance (config, backbones and
# their weights, packages, git commit); `snakemake --report report.html` gathers them.
BRAIN_MAPS = config["plots"]["brain_maps"]


rule scores_page:
    input:
        unpack(inputs("scores_page")),
    output:
        report(
            out("scores_page"),
            caption="../report/scores.rst",
            category="3. Scores",
            labels={"table": "1. the leaderboard's three aggregations"},
        ),
    params:
        key=key("scores_page"),
        scores=results.SCORES,
    conda:
        ENV
    log:
        results.log("scores_page"),
    shell:
        "nsdflow scores-page --scores {params.scores:q} --out {output:q} > {log} 2>&1"


rule plot_roi_bars:
    input:
        unpack(inputs("plot_roi_bars")),
    output:
        png=report(
            out("plot_roi_bars", "png"),
            caption="../report/roi_bars.rst",
            category="4. Figures",
            subcategory="median r per ROI",
            labels={"subject": "{subject}", "hemisphere": "{hemi}"},
        ),
        svg=out("plot_roi_bars", "svg"),
    params:
        key=key("plot_roi_bars"),
        split=config["plots"]["split"],
    conda:
        ENV
    log:
        results.log("plot_roi_bars"),
    shell:
        "nsdflow plot-roi-bars --summary {input.summary:q} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --split {params.split:q} --out {output.png:q} > {log} 2>&1"


rule plot_models:
    input:
        unpack(inputs("plot_models")),
    output:
        png=report(
            out("plot_models", "png"),
            caption="../report/model_comparison.rst",
            category="4. Figures",
            subcategory="model comparison",
            labels={"figure": "models across regions"},
        ),
        svg=out("plot_models", "svg"),
    params:
        key=key("plot_models"),
        split=config["plots"]["split"],
    conda:
        ENV
    log:
        results.log("plot_models"),
    shell:
        "nsdflow plot-models --summary {input.summary:q} --split {params.split:q} --out {output.png:q} > {log} 2>&1"


rule plot_brain_map:
    input:
        unpack(inputs("plot_brain_map")),
    output:
        png=report(
            out("plot_brain_map", "png"),
            caption="../report/brain_map.rst",
            category="4. Figures",
            subcategory="brain maps",
            labels={"model": "{model}", "subject": "{subject}"},
        ),
        svg=out("plot_brain_map", "svg"),
    wildcard_constraints:
        model=names(PLAN.scored_models),
    params:
        key=key("plot_brain_map"),
        root=PLAN.data_root,
        column=f"r_{config['plots']['split']}",
        vmax=["--vmax", BRAIN_MAPS["vmax"]] if BRAIN_MAPS["vmax"] is not None else [],
        maps=BRAIN_MAPS,
        outline=canonical(BRAIN_MAPS["outline"]),
    conda:
        ENV
    log:
        results.log("plot_brain_map"),
    shell:
        "nsdflow plot-brain-map --vertices lh={input.lh:q} rh={input.rh:q} --data {params.root:q}"
        " --subject {wildcards.subject} --model {wildcards.model:q} --column {params.column:q} {params.vmax:q}"
        " --scores {input.scores:q} --cmap {params.maps[cmap]:q} --mesh {params.maps[mesh]:q}"
        " --outline {params.outline:q} --out {output.png:q} > {log} 2>&1"


rule plot_attention:
    input:
        unpack(inputs("plot_attention")),
    output:
        png=report(
            out("plot_attention", "png"),
            caption="../report/attention.rst",
            category="4. Figures",
            subcategory="attention maps",
            labels={"model": "{model}", "subject": "{subject}"},
        ),
        svg=out("plot_attention", "svg"),
        csv=out("plot_attention", "csv"),
    wildcard_constraints:
        model=names(PLAN.attention_models),
    params:
        key=key("plot_attention"),
        root=PLAN.data_root,
    conda:
        ENV
    log:
        results.log("plot_attention"),
    shell:
        "nsdflow plot-attention --fits {input.fits:q} --data {params.root:q} --subject {wildcards.subject}"
        " --model {wildcards.model:q} --out {output.png:q} --csv {output.csv:q} > {log} 2>&1"


rule provenance:
    input:
        unpack(inputs("provenance")),
    output:
        html=report(
            out("provenance", "html"),
            caption="../report/provenance.rst",
            category="1. Provenance",
            labels={"page": "run, packages and config"},
        ),
        features=report(
            out("provenance", "features"),
            caption="../report/features.rst",
            category="2. Features",
            labels={"page": "backbones and weights"},
        ),
        json=out("provenance", "json"),
    params:
        key=key("provenance"),
        config=canonical(config),
        manifests=[f"{b}={results.output('combine_features', backbone=b)}" for b in PLAN.backbones],
        workflow_dir=workflow.basedir,
    conda:
        ENV
    log:
        results.log("provenance"),
    shell:
        "nsdflow provenance --config {params.config:q} --manifests {params.manifests:q}"
        " --workflow-dir {params.workflow_dir:q} --out {output.json:q} --html {output.html:q}"
        " --features-html {output.features:q} > {log} 2>&1"
