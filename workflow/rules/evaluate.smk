# Evaluate: per-vertex scores of every model and ensemble per hemisphere, then the tidy tables.


rule score_vertices:
    input:
        unpack(inputs("score_vertices")),
    output:
        out("score_vertices"),
    wildcard_constraints:
        model=names(PLAN.scored_models),
    params:
        key=key("score_vertices"),
        root=PLAN.data_root,
        withheld=["--withheld", PLAN.withheld] if PLAN.withheld else [],
    conda:
        ENV
    log:
        results.log("score_vertices"),
    shell:
        "nsdflow score-vertices --pred {input.pred:q} --data {params.root:q} {params.withheld:q}"
        " --subject {wildcards.subject} --hemi {wildcards.hemi} --regions {input.regions:q}"
        " --split {input.split:q} --out {output:q} > {log} 2>&1"


rule summarize:
    input:
        unpack(inputs("summarize")),
    output:
        leaderboard=report(
            out("summarize", "leaderboard_csv"),
            caption="../report/leaderboard.rst",
            category="3. Scores",
            labels={"table": "2. leaderboard (CSV)"},
        ),
        by_subject_hemi=report(
            out("summarize", "by_subject_hemi_csv"),
            caption="../report/by_subject_hemi.rst",
            category="3. Scores",
            labels={"table": "3. per subject and hemisphere (CSV)"},
        ),
        by_roi=report(
            out("summarize", "by_roi_csv"),
            caption="../report/by_roi.rst",
            category="3. Scores",
            labels={"table": "4. per ROI, subjects pooled (CSV)"},
        ),
        summary=report(
            out("summarize", "summary_csv"),
            caption="../report/summary.rst",
            category="3. Scores",
            labels={"table": "5. summary per subject, hemisphere and ROI (CSV)"},
        ),
        summary_pq=out("summarize", "summary_parquet"),
        leaderboard_pq=out("summarize", "leaderboard_parquet"),
        by_subject_hemi_pq=out("summarize", "by_subject_hemi_parquet"),
        by_roi_pq=out("summarize", "by_roi_parquet"),
        scores=out("summarize", "scores"),
    params:
        key=key("summarize"),
        vertices=[f"{m}:{s}:{h}={results.output('score_vertices', model=m, subject=s, hemi=h)}"
                  for m in PLAN.scored_models for s in PLAN.subjects for h in HEMIS],
        classes=canonical(PLAN.roi_classes),
        outdir=results.SCORES,
    conda:
        ENV
    log:
        results.log("summarize"),
    shell:
        "nsdflow summarize --vertices {params.vertices:q} --classes {params.classes:q} --outdir {params.outdir:q}"
        " > {log} 2>&1"
