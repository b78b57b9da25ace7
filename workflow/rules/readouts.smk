# Readouts: per subject a validation split; per subject and feature set an optional PCA and the
# cached designs (shared by every model, hemisphere and region that fits from them); per
# subject x hemisphere x model the fit jobs (one per region, or one per hemisphere) and a merge;
# per subject x hemisphere x ensemble the per-region combination; one selection table.
import re


def _names(names):
    """A wildcard constraint matching exactly these names (never matching if there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def design_path(model, subject):
    return f"results/designs/{PLAN.model_featureset(model)}/{PLAN.model_design(model)}/{subject}.npz"


def featureset_inputs(wildcards):
    fs = wildcards.featureset
    if PLAN.featureset_has_pca(fs):
        return {"pca": f"results/pca/{fs}/{wildcards.subject}.npz"}
    return {"features": expand("results/features/{b}.json", b=PLAN.featureset_backbones(fs))}


def store_args(featureset):
    return " ".join(f"{b}={feature_store(b)}" for b in PLAN.featureset_backbones(featureset))


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


rule targets:
    input:
        regions="results/regions/{subject}_{hemi}.npz",
        summary="results/data/{subject}.json",
    output:
        # Each region's training fMRI, read once per hemisphere for the per-region fit jobs (a
        # region's columns of the row-major fMRI file are scattered over all of it). Kept, not
        # temp(): recreating them for one new fit would make them newer than every other model's
        # fits, and Snakemake would rerun all of those. A copy of the fMRI: ~12 GB on the real data.
        expand("results/targets/{{subject}}_{{hemi}}/{region}.npy", region=PLAN.regions),
    params:
        root=PLAN.data_root,
        names=canonical(PLAN.regions),
        code=code_version("readouts"),
    conda:
        ENV
    log:
        "logs/targets/{subject}_{hemi}.log",
    shell:
        "nsdflow targets --data {params.root:q} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --regions {input.regions} --region-names {params.names:q} --outdir results/targets/{wildcards.subject}_{wildcards.hemi}"
        " > {log} 2>&1"


def fit_targets(wildcards):
    if PLAN.model_plans[wildcards.model]["fit_jobs"] != "region":
        return []
    return f"results/targets/{wildcards.subject}_{wildcards.hemi}/{wildcards.region}.npy"


rule pca:
    input:
        summary="results/data/{subject}.json",
        split="results/splits/{subject}.json",
        features=lambda wc: expand("results/features/{b}.json", b=PLAN.featureset_backbones(wc.featureset)),
    output:
        "results/pca/{featureset}/{subject}.npz",
    wildcard_constraints:
        featureset=_names([fs for fs in PLAN.feature_sets if PLAN.featureset_has_pca(fs)]),
    params:
        spec=lambda wc: PLAN.featureset_spec(wc.featureset),
        stores=lambda wc: store_args(wc.featureset),
        code=code_version("readouts"),
    threads: PLAN.readout_settings["threads"]
    conda:
        ENV
    log:
        "logs/pca/{featureset}/{subject}.log",
    benchmark:
        "benchmarks/pca/{featureset}/{subject}.tsv"
    shell:
        "nsdflow pca --featureset {params.spec:q} --summary {input.summary} --split {input.split}"
        " --store {params.stores} --out {output} > {log} 2>&1"


rule design:
    input:
        unpack(featureset_inputs),
        summary="results/data/{subject}.json",
        split="results/splits/{subject}.json",
    output:
        "results/designs/{featureset}/{design}/{subject}.npz",
    wildcard_constraints:
        featureset=_names(PLAN.feature_sets),
        design=_names({d for _, d in PLAN.designs}),
    params:
        featureset=lambda wc: PLAN.featureset_spec(wc.featureset),
        design=lambda wc: PLAN.design_kind_spec(wc.featureset, wc.design),
        stores=lambda wc: store_args(wc.featureset),
        pca=lambda wc, input: f"--pca {input.pca}" if "pca" in input.keys() else "",
        backend=PLAN.readout_settings["backend"],
        code=code_version("readouts"),
    threads: PLAN.readout_settings["threads"]
    conda:
        ENV
    log:
        "logs/design/{featureset}/{design}/{subject}.log",
    benchmark:
        "benchmarks/design/{featureset}/{design}/{subject}.tsv"
    shell:
        "nsdflow design --featureset {params.featureset:q} --design {params.design:q} --summary {input.summary}"
        " --split {input.split} --store {params.stores} {params.pca} --backend {params.backend}"
        " --out {output} > {log} 2>&1"


rule fit:
    input:
        design=lambda wc: design_path(wc.model, wc.subject),
        regions="results/regions/{subject}_{hemi}.npz",
        summary="results/data/{subject}.json",
        targets=fit_targets,
    output:
        "results/readouts/{model}/{subject}/{hemi}/{region}.npz",
    wildcard_constraints:
        model=_names(PLAN.models),
    params:
        spec=lambda wc: PLAN.fit_spec(wc.model),
        root=PLAN.data_root,
        targets=lambda wc, input: f"--targets {input.targets}" if input.targets else "",
        backend=lambda wc: PLAN.fit_backend(wc.model),
        code=code_version("readouts"),
    threads: lambda wc: PLAN.fit_threads(wc.model)
    conda:
        ENV
    log:
        "logs/fit/{model}/{subject}/{hemi}/{region}.log",
    shell:
        "nsdflow fit --spec {params.spec:q} --design {input.design} --data {params.root:q}"
        " --subject {wildcards.subject} --hemi {wildcards.hemi} --regions {input.regions}"
        " --region {wildcards.region} {params.targets} --backend {params.backend} --out {output} > {log} 2>&1"


rule merge:
    input:
        fits=lambda wc: expand(
            "results/readouts/{model}/{subject}/{hemi}/{region}.npz",
            model=wc.model, subject=wc.subject, hemi=wc.hemi, region=PLAN.fit_units(wc.model),
        ),
        summary="results/data/{subject}.json",
    output:
        "results/predictions/{model}/{subject}_{hemi}.npz",
    wildcard_constraints:
        model=_names(PLAN.models),
    params:
        code=code_version("evaluate"),
    conda:
        ENV
    log:
        "logs/merge/{model}/{subject}_{hemi}.log",
    shell:
        "nsdflow merge --summary {input.summary} --hemi {wildcards.hemi} --fits {input.fits} --out {output} > {log} 2>&1"


rule ensemble:
    input:
        preds=lambda wc: expand(
            "results/predictions/{m}/{subject}_{hemi}.npz",
            m=PLAN.ensembles[wc.ensemble]["models"], subject=wc.subject, hemi=wc.hemi,
        ),
        regions="results/regions/{subject}_{hemi}.npz",
        split="results/splits/{subject}.json",
    output:
        pred="results/predictions/{ensemble}/{subject}_{hemi}.npz",
        selection="results/ensembles/{ensemble}/{subject}_{hemi}.json",
    wildcard_constraints:
        ensemble=_names(PLAN.ensembles),
    params:
        members=lambda wc: " ".join(
            f"{m}=results/predictions/{m}/{wc.subject}_{wc.hemi}.npz" for m in PLAN.ensembles[wc.ensemble]["models"]
        ),
        method=lambda wc: PLAN.ensembles[wc.ensemble]["method"],
        root=PLAN.data_root,
        code=code_version("readouts"),
    conda:
        ENV
    log:
        "logs/ensemble/{ensemble}/{subject}_{hemi}.log",
    shell:
        "nsdflow ensemble --name {wildcards.ensemble} --method {params.method} --members {params.members}"
        " --data {params.root:q} --subject {wildcards.subject} --hemi {wildcards.hemi} --regions {input.regions}"
        " --split {input.split} --out {output.pred} --selection {output.selection} > {log} 2>&1"


rule selection:
    input:
        expand(
            "results/ensembles/{ensemble}/{subject}_{hemi}.json",
            ensemble=PLAN.ensembles, subject=PLAN.subjects, hemi=HEMIS,
        ),
    output:
        table=report(
            "results/scores/selection.csv",
            caption="../report/selection.rst",
            category="3. Scores",
            labels={"table": "per-region selection of the ensembles"},
        ),
        parquet="results/scores/selection.parquet",
    params:
        code=code_version("readouts"),
    conda:
        ENV
    log:
        "logs/selection.log",
    shell:
        "nsdflow selection-table --selections {input} --outdir results/scores > {log} 2>&1"
