# Evaluate: per-vertex scores per model and hemisphere, tidy summary tables, figures.


rule score:
    input:
        pred="results/predictions/{model}/{subject}_{hemi}.npz",
        regions="results/regions/{subject}_{hemi}.npz",
        split="results/splits/{subject}.json",
        withheld=withheld_inputs,
    output:
        "results/scores/vertices/{model}/{subject}_{hemi}.parquet",
    params:
        root=PLAN.data_root,
        withheld=f"--withheld {PLAN.withheld}" if PLAN.withheld else "",
        code=code_version("evaluate"),
    conda:
        ENV
    log:
        "logs/score/{model}/{subject}_{hemi}.log",
    shell:
        "nsdflow score-hemi --pred {input.pred} --data {params.root:q} {params.withheld}"
        " --subject {wildcards.subject} --hemi {wildcards.hemi} --regions {input.regions}"
        " --split {input.split} --out {output} > {log} 2>&1"


rule summarize:
    input:
        expand(
            "results/scores/vertices/{model}/{subject}_{hemi}.parquet",
            model=PLAN.scored_models,
            subject=PLAN.subjects,
            hemi=HEMIS,
        ),
    output:
        summary=report(
            "results/scores/summary.csv",
            caption="../report/summary.rst",
            category="3. Scores",
            labels={"table": "summary per subject, hemisphere and ROI"},
        ),
        summary_pq="results/scores/summary.parquet",
        leaderboard=report(
            "results/scores/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="3. Scores",
            labels={"table": "leaderboard"},
        ),
        leaderboard_pq="results/scores/leaderboard.parquet",
        scores="results/scores/scores.json",
    params:
        vertices=" ".join(
            f"{m}:{s}:{h}=results/scores/vertices/{m}/{s}_{h}.parquet"
            for m in PLAN.scored_models
            for s in PLAN.subjects
            for h in HEMIS
        ),
        classes=canonical(PLAN.roi_classes),
        code=code_version("evaluate"),
    conda:
        ENV
    log:
        "logs/summarize.log",
    shell:
        "nsdflow summarize --vertices {params.vertices} --classes {params.classes:q}"
        " --outdir results/scores > {log} 2>&1"


rule plot_roi_bars:
    input:
        "results/scores/summary.parquet",
    output:
        png=report(
            "results/plots/roi_median_r/{subject}_{hemi}.png",
            caption="../report/roi_bars.rst",
            category="4. Figures",
            subcategory="median r per ROI",
            labels={"subject": "{subject}", "hemisphere": "{hemi}"},
        ),
        svg="results/plots/roi_median_r/{subject}_{hemi}.svg",
    params:
        code=code_version("plots"),
    conda:
        ENV
    log:
        "logs/plots/roi_median_r_{subject}_{hemi}.log",
    shell:
        "nsdflow plot roi-bars --summary {input} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --out {output.png} > {log} 2>&1"


rule plot_models:
    input:
        "results/scores/summary.parquet",
    output:
        png=report(
            "results/plots/model_comparison.png",
            caption="../report/model_comparison.rst",
            category="4. Figures",
            subcategory="models",
            labels={"figure": "model comparison"},
        ),
        svg="results/plots/model_comparison.svg",
    params:
        code=code_version("plots"),
    conda:
        ENV
    log:
        "logs/plots/model_comparison.log",
    shell:
        "nsdflow plot models --summary {input} --out {output.png} > {log} 2>&1"
