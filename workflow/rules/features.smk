# Features: index every subject's images, decode each unique image once, then per backbone a
# preflight on the CPU, the extraction jobs (one per shard) and the combine step.
import os

IMAGES = config["images"]
HDF5 = os.path.expanduser(IMAGES["hdf5"]) if IMAGES["source"] == "hdf5" else None
EXTRACTION = config["extraction"]


rule index_images:
    input:
        unpack(inputs("index_images")),
    output:
        out("index_images"),
    params:
        key=key("index_images"),
        root=PLAN.data_root,
        subjects=PLAN.subjects,
    conda:
        ENV
    log:
        results.log("index_images"),
    shell:
        "nsdflow index-images --data {params.root:q} --subjects {params.subjects:q} --out {output:q} > {log} 2>&1"


rule cache_images:
    input:
        unpack(inputs("cache_images")),
    output:
        out("cache_images"),
    params:
        key=key("cache_images"),
        store=results.IMAGE_STORE,
        size=["--size", IMAGES["size"]] if IMAGES["size"] else [],
        hdf5=(["--hdf5", HDF5, "--hdf5-dataset", IMAGES["hdf5_dataset"], "--hdf5-index-base", IMAGES["hdf5_index_base"]]
              if HDF5 else []),
        images=IMAGES,
    threads: IMAGES["workers"]
    conda:
        ENV
    log:
        results.log("cache_images"),
    benchmark:
        results.benchmark("cache_images")
    shell:
        "nsdflow cache-images --index {input.index:q} --store {params.store:q} --out {output:q}"
        " --chunk {params.images[chunk]:q} {params.size:q} --workers {threads} --source {params.images[source]:q}"
        " {params.hdf5:q} --compression {params.images[compression]:q} > {log} 2>&1"


# Preflight: build each backbone once on the CPU (its checkpoint included) and pool one image
# through its layers, so that a wrong layer, pooling or checkpoint fails now, not after a GPU job
# waited in a queue. A local job: it runs first, as nothing but the checkpoint comes before it, and
# its priority keeps another backbone's extraction from being picked before it (Snakemake otherwise
# prefers the ready job with the larger inputs).
rule check_backbone:
    input:
        unpack(inputs("check_backbone")),
    output:
        out("check_backbone"),
    priority: 10
    params:
        key=key("check_backbone"),
        spec=lambda wc: PLAN.backbone_spec(wc.backbone),
    threads: 2
    localrule: True
    conda:
        ENV
    log:
        results.log("check_backbone"),
    shell:
        "nsdflow check-backbone --name {wildcards.backbone:q} --spec {params.spec:q} --out {output:q} > {log} 2>&1"


# One job per backbone and shard (extraction.shards; one GPU each): shard k of N writes its own
# contiguous chunk range of the backbone's store, which is resumable, hence not a declared output
# (Snakemake would delete it before a rerun); the shard's small manifest is.
rule extract:
    input:
        unpack(inputs("extract")),
    output:
        out("extract"),
    wildcard_constraints:
        shard=r"\d+",
        nshards=r"\d+",
    params:
        key=key("extract"),
        spec=lambda wc: PLAN.backbone_spec(wc.backbone),
        store=lambda wc: results.feature_store(wc.backbone),
        images=results.IMAGE_STORE,
        device=EXTRACTION["device"],
        readers=EXTRACTION["readers"],
    threads: EXTRACTION["threads"]
    resources:
        gpu=EXTRACTION["gpus"],
        mem_mb=EXTRACTION["mem_mb"],
        runtime=EXTRACTION["runtime"],
    conda:
        ENV
    log:
        results.log("extract"),
    benchmark:
        results.benchmark("extract")
    shell:
        "nsdflow extract --name {wildcards.backbone:q} --spec {params.spec:q} --images {params.images:q}"
        " --store {params.store:q} --out {output:q} --device {params.device:q} --threads {threads}"
        " --shard {wildcards.shard} --shards {wildcards.nshards} --readers {params.readers:q} > {log} 2>&1"


# Checks that every chunk of the store is done; later rules depend on this manifest only.
rule combine_features:
    input:
        unpack(inputs("combine_features")),
    output:
        out("combine_features"),
    params:
        key=key("combine_features"),
        store=lambda wc: results.feature_store(wc.backbone),
    localrule: True
    conda:
        ENV
    log:
        results.log("combine_features"),
    shell:
        "nsdflow combine-features --store {params.store:q} --shard-manifests {input.shards:q} --out {output:q}"
        " > {log} 2>&1"
