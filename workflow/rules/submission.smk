# Submission: the chosen model's test predictions as the challenge's zip, checked before it is kept.


rule submission:
    input:
        unpack(inputs("submission")),
    output:
        zip=report(
            out("submission", "zip"),
            caption="../report/submission.rst",
            category="5. Submission",
            labels={"file": "submission zip"},
        ),
        check=report(
            out("submission", "check"),
            caption="../report/submission_check.rst",
            category="5. Submission",
            labels={"file": "check-submission's report"},
        ),
    params:
        key=key("submission"),
        pred=lambda wc, input: [f"{s}:{h}={p}" for (s, h), p in zip(((s, h) for s in PLAN.subjects for h in HEMIS),
                                                                   input.preds)],
        root=PLAN.data_root,
    conda:
        ENV
    log:
        results.log("submission"),
    # Assembled, then checked exactly as `nsdflow check-submission` does by hand: a zip the
    # leaderboard would reject fails the job (its log lists every problem) and is not kept.
    shell:
        "nsdflow submission --pred {params.pred:q} --data {params.root:q} --out {output.zip:q}"
        " --check {output.check:q} > {log} 2>&1"
