# Submission: the chosen model's test predictions as the challenge's zip, checked before it is kept.


rule submission:
    input:
        expand(
            "results/predictions/{model}/{subject}_{hemi}.npz",
            model=PLAN.submission_model,
            subject=PLAN.subjects,
            hemi=HEMIS,
        ),
    output:
        report(
            "results/submission/submission.zip",
            caption="../report/submission.rst",
            category="5. Submission",
            labels={"file": "submission zip"},
        ),
    params:
        pred=" ".join(
            f"{s}:{h}=results/predictions/{PLAN.submission_model}/{s}_{h}.npz"
            for s in PLAN.subjects
            for h in HEMIS
        ),
        root=PLAN.data_root,
        model=PLAN.submission_model,
        code=code_version("submission"),
    conda:
        ENV
    log:
        "logs/submission.log",
    shell:
        "nsdflow submit --pred {params.pred} --data {params.root:q} --out {output} > {log} 2>&1"
