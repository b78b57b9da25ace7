# Features: index every subject's images, decode each unique image once, extract each backbone.
import os
import shlex

HDF5 = os.path.expanduser(config["images"]["hdf5"]) if config["images"]["source"] == "hdf5" else None


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
        index="results/images/index.csv",
        hdf5=[HDF5] if HDF5 else [],
    output:
        "results/images/cache.json",
    params:
        store=IMAGE_STORE,
        size=f"--size {config['images']['size']}" if config["images"]["size"] else "",
        chunk=config["images"]["chunk"],
        source=config["images"]["source"],
        hdf5=(
            f"--hdf5 {shlex.quote(HDF5)} --hdf5-dataset {shlex.quote(config['images']['hdf5_dataset'])}"
            f" --hdf5-index-base {config['images']['hdf5_index_base']}"
            if HDF5
            else ""
        ),
        compression=config["images"]["compression"],
        code=code_version("images"),
    threads: config["images"]["workers"]
    conda:
        ENV
    log:
        "logs/image_cache.log",
    benchmark:
        "benchmarks/image_cache.tsv"
    shell:
        "nsdflow cache-images --index {input.index} --store {params.store} --manifest {output}"
        " --chunk {params.chunk} {params.size} --workers {threads} --source {params.source} {params.hdf5}"
        " --compression {params.compression} > {log} 2>&1"


# One job per backbone and shard (extraction.shards; one GPU each): shard k of N writes its own
# contiguous chunk range of the backbone's store, which is resumable, hence not a declared output
# (Snakemake would delete it before a rerun); the shard's small manifest is.
rule extract:
    input:
        images="results/images/cache.json",
        weights=lambda wc: PLAN.weights_files(wc.backbone),
    output:
        "results/features/{backbone}.shards/{shard}-of-{nshards}.json",
    wildcard_constraints:
        shard=r"\d+",
        nshards=r"\d+",
    params:
        spec=lambda wc: PLAN.backbone_spec(wc.backbone),
        store=lambda wc: feature_store(wc.backbone),
        images=IMAGE_STORE,
        device=config["extraction"]["device"],
        readers=config["extraction"]["readers"],
        code=code_version("features"),
    threads: config["extraction"]["threads"]
    resources:
        gpu=config["extraction"]["gpus"],
        mem_mb=config["extraction"]["mem_mb"],
        runtime=config["extraction"]["runtime"],
    conda:
        ENV
    log:
        "logs/extract/{backbone}.{shard}-of-{nshards}.log",
    benchmark:
        "benchmarks/extract/{backbone}.{shard}-of-{nshards}.tsv"
    shell:
        "nsdflow extract --name {wildcards.backbone} --spec {params.spec:q} --images {params.images}"
        " --store {params.store} --manifest {output} --device {params.device} --threads {threads}"
        " --shard {wildcards.shard} --shards {wildcards.nshards} --readers {params.readers} > {log} 2>&1"


# Checks that every chunk of the store is done; downstream rules depend on this manifest only.
rule combine_features:
    input:
        lambda wc: PLAN.shard_manifests(wc.backbone),
    output:
        "results/features/{backbone}.json",
    params:
        store=lambda wc: feature_store(wc.backbone),
        code=code_version("features"),
    localrule: True
    conda:
        ENV
    log:
        "logs/combine_features/{backbone}.log",
    shell:
        "nsdflow combine-features --store {params.store} --shard-manifests {input} --manifest {output} > {log} 2>&1"
