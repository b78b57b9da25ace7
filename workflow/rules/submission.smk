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
        zip=report(
            "results/submission/submission.zip",
            caption="../report/submission.rst",
            category="5. Submission",
            labels={"file": "submission zip"},
        ),
        check=report(
            "results/submission/check.txt",
            caption="../report/submission_check.rst",
            category="5. Submission",
            labels={"file": "check-submission's report"},
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
    # Assemble, then check exactly as `nsdflow check-submission` does by hand: a zip the
    # leaderboard would reject fails the job (its log lists every problem) and is not kept.
    shell:
        "nsdflow submit --no-check --pred {params.pred} --data {params.root:q} --out {output.zip} > {log} 2>&1"
        " && nsdflow check-submission {output.zip} --data {params.root:q} --out {output.check} >> {log} 2>&1"
