# Data: generate the demo dataset (when data.root is "demo") and validate each subject.


rule demo_data:
    output:
        DEMO_MANIFEST,
    params:
        root=PLAN.data_root,
        withheld="results/demo/withheld",
        demo=canonical(config["demo"]),
        d=config["demo"],
        code=code_version("demo"),
    conda:
        ENV
    log:
        "logs/demo_data.log",
    shell:
        "nsdflow demo --root {params.root} --withheld {params.withheld} --seed {params.d[seed]}"
        " --subjects {params.d[n_subjects]} --n-train {params.d[n_train]} --n-test {params.d[n_test]}"
        " --n-shared {params.d[n_shared]} --image-size {params.d[image_size]}"
        " --roi-dropout {params.d[roi_dropout]} > {log} 2>&1"


rule validate_data:
    input:
        raw_data,
    output:
        "results/data/{subject}.json",
    params:
        root=PLAN.data_root,
        classes=" ".join(PLAN.roi_classes),
        finite="" if config["data"]["check_finite"] else "--no-finite-check",
        images="" if config["data"]["check_images"] else "--no-image-check",
        data=lambda wc: data_fingerprint(PLAN, wc.subject),  # fMRI and image listing: content, not times
        code=code_version("data"),
    conda:
        ENV
    log:
        "logs/validate_data/{subject}.log",
    shell:
        "nsdflow validate-data {params.root:q} --subject {wildcards.subject} --roi-classes {params.classes}"
        " {params.finite} {params.images} --json {output} > {log} 2>&1"
