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
        scores_html=report(
            "results/scores/scores.html",
            caption="../report/scores.rst",
            category="3. Scores",
            labels={"table": "1. the leaderboard's three aggregations"},
        ),
        leaderboard=report(
            "results/scores/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="3. Scores",
            labels={"table": "2. leaderboard (CSV)"},
        ),
        by_subject_hemi=report(
            "results/scores/by_subject_hemi.csv",
            caption="../report/by_subject_hemi.rst",
            category="3. Scores",
            labels={"table": "3. per subject and hemisphere (CSV)"},
        ),
        by_roi=report(
            "results/scores/by_roi.csv",
            caption="../report/by_roi.rst",
            category="3. Scores",
            labels={"table": "4. per ROI, subjects pooled (CSV)"},
        ),
        summary=report(
            "results/scores/summary.csv",
            caption="../report/summary.rst",
            category="3. Scores",
            labels={"table": "5. summary per subject, hemisphere and ROI (CSV)"},
        ),
        summary_pq="results/scores/summary.parquet",
        leaderboard_pq="results/scores/leaderboard.parquet",
        by_subject_hemi_pq="results/scores/by_subject_hemi.parquet",
        by_roi_pq="results/scores/by_roi.parquet",
        scores="results/scores/scores.json",
    params:
        vertices=" ".join(
            f"{m}:{s}:{h}=results/scores/vertices/{m}/{s}_{h}.parquet"
            for m in PLAN.scored_models
            for s in PLAN.subjects
            for h in HEMIS
        ),
        classes=canonical(PLAN.roi_classes),
        code=code_version("summary"),
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
        split=config["plots"]["split"],
        code=code_version("plots"),
    conda:
        ENV
    log:
        "logs/plots/roi_median_r_{subject}_{hemi}.log",
    shell:
        "nsdflow plot roi-bars --summary {input} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --split {params.split} --out {output.png} > {log} 2>&1"


rule plot_models:
    input:
        "results/scores/summary.parquet",
    output:
        png=report(
            "results/plots/model_comparison.png",
            caption="../report/model_comparison.rst",
            category="4. Figures",
            subcategory="model comparison",
            labels={"figure": "models across regions"},
        ),
        svg="results/plots/model_comparison.svg",
    params:
        split=config["plots"]["split"],
        code=code_version("plots"),
    conda:
        ENV
    log:
        "logs/plots/model_comparison.log",
    shell:
        "nsdflow plot models --summary {input} --split {params.split} --out {output.png} > {log} 2>&1"


rule plot_brain_map:
    input:
        lh="results/scores/vertices/{model}/{subject}_lh.parquet",
        rh="results/scores/vertices/{model}/{subject}_rh.parquet",
        summary="results/data/{subject}.json",
        scores="results/scores/scores.json",
    output:
        png=report(
            "results/plots/brain_maps/{model}/{subject}.png",
            caption="../report/brain_map.rst",
            category="4. Figures",
            subcategory="brain maps",
            labels={"model": "{model}", "subject": "{subject}"},
        ),
        svg="results/plots/brain_maps/{model}/{subject}.svg",
    params:
        root=PLAN.data_root,
        column=f"r_{config['plots']['split']}",
        vmax=(
            f"--vmax {config['plots']['brain_maps']['vmax']}"
            if config["plots"]["brain_maps"]["vmax"] is not None
            else ""
        ),
        cmap=config["plots"]["brain_maps"]["cmap"],
        mesh=config["plots"]["brain_maps"]["mesh"],
        outline=canonical(config["plots"]["brain_maps"]["outline"]),
        code=code_version("plots"),
    conda:
        ENV
    log:
        "logs/plots/brain_maps/{model}/{subject}.log",
    shell:
        "nsdflow plot brain-map --vertices lh={input.lh} rh={input.rh} --data {params.root:q}"
        " --subject {wildcards.subject} --model {wildcards.model} --column {params.column} {params.vmax}"
        " --scores {input.scores} --cmap {params.cmap} --mesh {params.mesh} --outline {params.outline:q}"
        " --out {output.png} > {log} 2>&1"
