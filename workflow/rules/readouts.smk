# Readouts: per subject a validation split; per subject and hemisphere a region table and each
# region's training fMRI; per subject and feature set an optional PCA and the cached designs
# (shared by every model, hemisphere and region that fits from them); per subject x hemisphere x
# model the fit jobs (one per region, or one per hemisphere) and a merge; per subject x
# hemisphere x ensemble the per-region combination; one selection table.


def store_args(featureset):
    return [f"{b}={results.feature_store(b)}" for b in PLAN.featureset_backbones(featureset)]


rule split:
    input:
        unpack(inputs("split")),
    output:
        out("split"),
    params:
        key=key("split"),
        split=config["split"],
    conda:
        ENV
    log:
        results.log("split"),
    shell:
        "nsdflow split --summary {input.summary:q} --fraction {params.split[val_fraction]:q}"
        " --seed {params.split[seed]:q} --out {output:q} > {log} 2>&1"


rule regions:
    input:
        unpack(inputs("regions")),
    output:
        out("regions"),
    params:
        key=key("regions"),
        root=PLAN.data_root,
        classes=canonical(PLAN.roi_classes),
    conda:
        ENV
    log:
        results.log("regions"),
    shell:
        "nsdflow regions --data {params.root:q} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --classes {params.classes:q} --out {output:q} > {log} 2>&1"


rule targets:
    input:
        unpack(inputs("targets")),
    output:
        # Each region's training fMRI, read once per hemisphere for the per-region fit jobs (a
        # region's columns of the row-major fMRI file are scattered over all of it).
        [results.output("targets", region=r) for r in PLAN.regions],
    params:
        key=key("targets"),
        root=PLAN.data_root,
        names=canonical(PLAN.regions),
        outdir=lambda wc: os.path.dirname(results.output("targets", subject=wc.subject, hemi=wc.hemi, region="r")),
    conda:
        ENV
    log:
        results.log("targets"),
    shell:
        "nsdflow targets --data {params.root:q} --subject {wildcards.subject} --hemi {wildcards.hemi}"
        " --regions {input.regions:q} --region-names {params.names:q} --outdir {params.outdir:q} > {log} 2>&1"


rule pca:
    input:
        unpack(inputs("pca")),
    output:
        out("pca"),
    wildcard_constraints:
        featureset=names([fs for fs in PLAN.feature_sets if PLAN.featureset_has_pca(fs)]),
        subject=r"subj\d{2}|all",
    params:
        key=key("pca"),
        spec=lambda wc: PLAN.featureset_spec(wc.featureset),
        stores=lambda wc: store_args(wc.featureset),
    threads: PLAN.readout_settings["threads"]
    conda:
        ENV
    log:
        results.log("pca"),
    benchmark:
        results.benchmark("pca")
    shell:
        "nsdflow pca --featureset {params.spec:q} --summary {input.summary:q} --split {input.split:q}"
        " --store {params.stores:q} --threads {threads} --out {output:q} > {log} 2>&1"


rule design:
    input:
        unpack(inputs("design")),
    output:
        out("design"),
    wildcard_constraints:
        featureset=names(PLAN.feature_sets),
        design=names({d for _, d in PLAN.designs}),
    params:
        key=key("design"),
        featureset=lambda wc: PLAN.featureset_spec(wc.featureset),
        design=lambda wc: PLAN.design_kind_spec(wc.featureset, wc.design),
        stores=lambda wc: store_args(wc.featureset),
        pca=lambda wc, input: ["--pca", input.pca] if "pca" in input.keys() else [],
        backend=PLAN.readout_settings["backend"],
    threads: PLAN.readout_settings["threads"]
    conda:
        ENV
    log:
        results.log("design"),
    benchmark:
        results.benchmark("design")
    shell:
        "nsdflow design --featureset {params.featureset:q} --design {params.design:q} --summary {input.summary:q}"
        " --split {input.split:q} --store {params.stores:q} {params.pca:q} --backend {params.backend:q}"
        " --threads {threads} --out {output:q} > {log} 2>&1"


def optional(flag, name):
    """``[flag, input.name...]`` when the job has that input, else nothing (for the shell)."""

    def fn(wildcards, input):
        return [flag, *(input[name] if isinstance(input[name], list) else [input[name]])] if name in input.keys() else []

    return fn


def pretrained_args(wildcards, input):
    if "pretrained" not in input.keys():
        return []
    return ["--pretrained", *(f"{run}={path}" for run, path in zip(PLAN.runs(wildcards.model), input.pretrained))]


rule pretrain:
    input:
        unpack(inputs("pretrain")),
    output:
        out("pretrain"),
    wildcard_constraints:
        model=names(PLAN.pretrained_models()),
        run=r"val|test|k\d+",
    params:
        key=key("pretrain"),
        spec=lambda wc: PLAN.fit_spec(wc.model),
        root=PLAN.data_root,
        designs=lambda wc, input: [f"{s}={p}" for s, p in zip(PLAN.subjects, input.designs)],
        summaries=lambda wc, input: [f"{s}={p}" for s, p in zip(PLAN.subjects, input.summaries)],
        splits=lambda wc, input: [f"{s}={p}" for s, p in zip(PLAN.subjects, input.splits)],
        checkpoint=lambda wc: results.fill(results.PRETRAIN_CHECKPOINT, model=wc.model, run=wc.run),
        backend=lambda wc: PLAN.fit_backend(wc.model),
    threads: PLAN.readout_settings["threads"]
    conda:
        ENV
    log:
        results.log("pretrain"),
    benchmark:
        results.benchmark("pretrain")
    shell:
        "nsdflow pretrain --spec {params.spec:q} --run {wildcards.run:q} --designs {params.designs:q}"
        " --data {params.root:q} --summaries {params.summaries:q} --splits {params.splits:q}"
        " --checkpoint {params.checkpoint:q} --key {params.key:q} --backend {params.backend:q} --threads {threads}"
        " --out {output:q} > {log} 2>&1"


rule fit:
    input:
        unpack(inputs("fit")),
    output:
        out("fit"),
    wildcard_constraints:
        model=names(PLAN.models),
        hemi="lh|rh|both",
        region=names([*PLAN.regions, results.HEMISPHERE_UNIT, results.SUBJECT_UNIT]),
    params:
        key=key("fit"),
        spec=lambda wc: PLAN.fit_spec(wc.model),
        root=PLAN.data_root,
        design=optional("--design", "design"),
        targets=optional("--targets", "targets"),
        stores=lambda wc: ["--store", *(f"{b}={results.feature_store(b)}" for b in PLAN.model_backbones(wc.model))]
        if PLAN.model_plans[wc.model]["design"] is None else [],
        pretrained=pretrained_args,
        checkpoints=lambda wc: results.fill(results.CHECKPOINTS, **dict(wc.items())),
        backend=lambda wc: PLAN.fit_backend(wc.model),
    threads: lambda wc: PLAN.fit_threads(wc.model)
    conda:
        ENV
    log:
        results.log("fit"),
    shell:
        "nsdflow fit --spec {params.spec:q} --data {params.root:q} --subject {wildcards.subject}"
        " --hemi {wildcards.hemi} --region {wildcards.region:q} --regions {input.regions:q}"
        " --summary {input.summary:q} --split {input.split:q} {params.design:q} {params.targets:q}"
        " {params.stores:q} {params.pretrained:q} --checkpoints {params.checkpoints:q} --key {params.key:q}"
        " --backend {params.backend:q} --threads {threads} --out {output:q} > {log} 2>&1"


rule merge:
    input:
        unpack(inputs("merge")),
    output:
        out("merge"),
    wildcard_constraints:
        model=names(PLAN.models),
    params:
        key=key("merge"),
    conda:
        ENV
    log:
        results.log("merge"),
    shell:
        "nsdflow merge --summary {input.summary:q} --hemi {wildcards.hemi} --fits {input.fits:q} --out {output:q}"
        " > {log} 2>&1"


rule ensemble:
    input:
        unpack(inputs("ensemble")),
    output:
        pred=out("ensemble", "pred"),
        selection=out("ensemble", "selection"),
    wildcard_constraints:
        ensemble=names(PLAN.ensembles),
    params:
        key=key("ensemble"),
        members=lambda wc, input: [f"{m}={p}" for m, p in zip(PLAN.ensembles[wc.ensemble]["models"], input.preds)],
        method=lambda wc: PLAN.ensembles[wc.ensemble]["method"],
        e=lambda wc: PLAN.ensembles[wc.ensemble],
        root=PLAN.data_root,
    conda:
        ENV
    log:
        results.log("ensemble"),
    shell:
        "nsdflow ensemble --name {wildcards.ensemble:q} --method {params.method:q} --members {params.members:q}"
        " --select-on {params.e[select_on]:q} --tau {params.e[tau]:q}"
        " --data {params.root:q} --subject {wildcards.subject} --hemi {wildcards.hemi} --regions {input.regions:q}"
        " --split {input.split:q} --out {output.pred:q} --selection {output.selection:q} > {log} 2>&1"


rule selection:
    input:
        unpack(inputs("selection")),
    output:
        table=report(
            out("selection", "csv"),
            caption="../report/selection.rst",
            category="3. Scores",
            labels={"table": "per-region selection of the ensembles"},
        ),
        parquet=out("selection", "parquet"),
    params:
        key=key("selection"),
        outdir=results.SCORES,
    conda:
        ENV
    log:
        results.log("selection"),
    shell:
        "nsdflow selection --selections {input.selections:q} --outdir {params.outdir:q} > {log} 2>&1"
