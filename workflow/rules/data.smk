# Data: generate the demo dataset (when data.root is "demo") and validate each subject.


rule demo:
    output:
        out("demo"),
    params:
        key=key("demo"),
        root=results.DEMO_ROOT,
        withheld=results.DEMO_WITHHELD,
        d=config["demo"],
    conda:
        ENV
    log:
        results.log("demo"),
    shell:
        "nsdflow demo --data {params.root:q} --withheld {params.withheld:q} --seed {params.d[seed]}"
        " --subjects {params.d[n_subjects]} --n-train {params.d[n_train]} --n-test {params.d[n_test]}"
        " --n-shared {params.d[n_shared]} --image-size {params.d[image_size]}"
        " --roi-dropout {params.d[roi_dropout]} > {log} 2>&1"


rule validate_data:
    input:
        unpack(inputs("validate_data")),
    output:
        out("validate_data"),
    params:
        key=key("validate_data"),
        root=PLAN.data_root,
        classes=PLAN.roi_classes,
        finite="" if config["data"]["check_finite"] else "--no-finite-check",
        images="" if config["data"]["check_images"] else "--no-image-check",
    conda:
        ENV
    log:
        results.log("validate_data"),
    shell:
        "nsdflow validate-data --data {params.root:q} --subject {wildcards.subject} --roi-classes {params.classes:q}"
        " {params.finite} {params.images} --out {output:q} > {log} 2>&1"
