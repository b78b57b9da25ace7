# Readouts: per subject a validation split and the cached design (decomposition) of each model;
# per subject x hemisphere x region x model one fit; per hemisphere a merge.


rule split:
    input:
        "results/data/{subject}.json",
    output:
        "results/splits/{subject}.json",
    params:
        fraction=config["split"]["val_fraction"],
        seed=config["split"]["seed"],
        code=code_version("readouts"),
    conda:
        ENV
    log:
        "logs/split/{subject}.log",
    shell:
        "nsdflow split --summary {input} --fraction {params.fraction} --seed {params.seed} --out {output} > {log} 2>&1"


rule regions:
    input:
        "results/data/{subject}.json",
    output:
        "results/regions/{subject}_{hemi}.npz",
    params:
        root=PLAN.data_root,
        classes=canonical(PLAN.roi_classes),
        code=code_version("readouts"),
    conda:
        ENV
    log:
        "logs/regions/{subject}_{hemi}.log",
    shell:
        "nsdflow regions {params.root:q} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --classes {params.classes:q} --out {output} > {log} 2>&1"


rule design:
    input:
        summary="results/data/{subject}.json",
        split="results/splits/{subject}.json",
        features=lambda wc: expand("results/features/{b}.json", b=PLAN.model_backbones(wc.model)),
    output:
        "results/readouts/{model}/{subject}/design.npz",
    params:
        spec=lambda wc: PLAN.design_spec(wc.model),
        stores=lambda wc: " ".join(f"{b}={feature_store(b)}" for b in PLAN.model_backbones(wc.model)),
        code=code_version("readouts"),
    threads: 2
    conda:
        ENV
    log:
        "logs/design/{model}/{subject}.log",
    benchmark:
        "benchmarks/design/{model}/{subject}.tsv"
    shell:
        "nsdflow design --spec {params.spec:q} --summary {input.summary} --split {input.split}"
        " --store {params.stores} --out {output} > {log} 2>&1"


rule fit:
    input:
        design="results/readouts/{model}/{subject}/design.npz",
        regions="results/regions/{subject}_{hemi}.npz",
        summary="results/data/{subject}.json",
    output:
        "results/readouts/{model}/{subject}/{hemi}/{region}.npz",
    params:
        spec=lambda wc: PLAN.fit_spec(wc.model),
        root=PLAN.data_root,
        code=code_version("readouts"),
    threads: 1
    conda:
        ENV
    log:
        "logs/fit/{model}/{subject}/{hemi}/{region}.log",
    shell:
        "nsdflow fit --spec {params.spec:q} --design {input.design} --data {params.root:q}"
        " --subject {wildcards.subject} --hemi {wildcards.hemi} --regions {input.regions}"
        " --region {wildcards.region} --out {output} > {log} 2>&1"


rule merge:
    input:
        fits=expand("results/readouts/{{model}}/{{subject}}/{{hemi}}/{region}.npz", region=PLAN.regions),
        summary="results/data/{subject}.json",
    output:
        "results/predictions/{model}/{subject}_{hemi}.npz",
    params:
        code=code_version("evaluate"),
    conda:
        ENV
    log:
        "logs/merge/{model}/{subject}_{hemi}.log",
    shell:
        "nsdflow merge --summary {input.summary} --hemi {wildcards.hemi} --fits {input.fits} --out {output} > {log} 2>&1"
