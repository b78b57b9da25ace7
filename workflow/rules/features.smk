# Features: index every subject's images, decode each unique image once, extract each backbone.


rule image_index:
    input:
        expand("results/data/{subject}.json", subject=PLAN.subjects),
    output:
        "results/images/index.csv",
    params:
        root=PLAN.data_root,
        subjects=" ".join(PLAN.subjects),
        code=code_version("images"),
    conda:
        ENV
    log:
        "logs/image_index.log",
    shell:
        "nsdflow index-images {params.root:q} --subjects {params.subjects} --out {output} > {log} 2>&1"


rule image_cache:
    input:
        "results/images/index.csv",
    output:
        "results/images/cache.json",
    params:
        store=IMAGE_STORE,
        size=f"--size {config['images']['size']}" if config["images"]["size"] else "",
        chunk=config["images"]["chunk"],
        code=code_version("images"),
    threads: 4
    conda:
        ENV
    log:
        "logs/image_cache.log",
    benchmark:
        "benchmarks/image_cache.tsv"
    shell:
        "nsdflow cache-images --index {input} --store {params.store} --manifest {output}"
        " --chunk {params.chunk} {params.size} --workers {threads} > {log} 2>&1"


rule extract:
    input:
        "results/images/cache.json",
    output:
        "results/features/{backbone}.json",
    params:
        spec=lambda wc: PLAN.backbone_spec(wc.backbone),
        store=lambda wc: feature_store(wc.backbone),
        images=IMAGE_STORE,
        device=config["extraction"]["device"],
        code=code_version("features"),
    threads: config["extraction"]["threads"]
    resources:
        gpu=config["extraction"]["gpus"],
        mem_mb=config["extraction"]["mem_mb"],
        runtime=config["extraction"]["runtime"],
    conda:
        ENV
    log:
        "logs/extract/{backbone}.log",
    benchmark:
        "benchmarks/extract/{backbone}.tsv"
    shell:
        "nsdflow extract --name {wildcards.backbone} --spec {params.spec:q} --images {params.images}"
        " --store {params.store} --manifest {output} --device {params.device} --threads {threads} > {log} 2>&1"
