"""The readouts stage's commands (rules split, regions, targets, pca, design, fit, merge, ensemble,
selection), and ``nsdflow readout-params``."""

from __future__ import annotations

from ..args import json_arg, pairs


def cmd_split(a) -> None:
    from ..io import atomic_write_json, read_json
    from .split import make_split

    summary = read_json(a.summary)
    atomic_write_json(a.out, make_split(summary["n_train"], a.fraction, a.seed, summary["subject"]))


def cmd_regions(a) -> None:
    from .regions import region_table, save_region_table

    table = region_table(a.data, a.subject, a.hemi, a.classes)
    save_region_table(table, a.out)
    print(f"{a.subject} {a.hemi}: {len(table)} vertices in {table['region'].nunique()} regions")


def cmd_targets(a) -> None:
    from .targets import split_targets

    counts = split_targets(a.data, a.subject, a.hemi, a.regions, a.region_names, a.outdir)
    print(f"{a.subject} {a.hemi}: {sum(counts.values())} vertices in {sum(1 for c in counts.values() if c)} regions "
          f"-> {a.outdir}")


def cmd_pca(a) -> None:
    from .backend import set_threads

    set_threads(a.threads)
    from .featuresets import build_pca

    build_pca(a.featureset, a.summary, a.split, pairs(a.store), a.out)


def cmd_design(a) -> None:
    from .backend import set_threads

    set_threads(a.threads)
    from .designs import build_design_file

    build_design_file(a.featureset, a.design["kind"], a.design.get("params", {}), a.summary, a.split,
                      pairs(a.store or []), a.out, pca_path=a.pca, backend=a.backend)


def cmd_fit(a) -> None:
    from .backend import set_threads

    set_threads(a.threads)
    from .fit import fit_job

    fit_job(a.spec, a.out, a.data, a.subject, a.hemi, a.region, a.regions, a.summary, a.split, design=a.design,
            stores=pairs(a.store), targets=a.targets, pretrained=pairs(a.pretrained), checkpoints=a.checkpoints,
            backend=a.backend, key=a.key)


def cmd_pretrain(a) -> None:
    from .backend import set_threads

    set_threads(a.threads)
    from .pretrain import pretrain_run

    pretrain_run(a.spec, a.run, pairs(a.designs), a.data, pairs(a.summaries), pairs(a.splits), a.out,
                 checkpoint=a.checkpoint, backend=a.backend, key=a.key)


def cmd_merge(a) -> None:
    from ..io import read_json
    from .merge import merge_predictions

    merge_predictions(a.fits, read_json(a.summary)["n_vertices"][a.hemi], a.out, hemi=a.hemi)


def cmd_ensemble(a) -> None:
    from .ensembles import build_ensemble

    build_ensemble(a.name, a.method, pairs(a.members), a.data, a.subject, a.hemi, a.regions, a.split, a.out,
                   a.selection, select_on=a.select_on, tau=a.tau)


def cmd_selection(a) -> None:
    from .ensembles import selection_table

    table = selection_table(a.selections, a.outdir)
    won = table[table["chosen"]].groupby(["ensemble", "model"]).size()
    print(f"{len(table)} rows -> {a.outdir}/selection.csv; regions won or weighted per model:")
    print(won.to_string())


def cmd_readout_params(a) -> None:
    from .registry import describe_params

    print(describe_params())


def register(add) -> None:
    s = add("split", cmd_split, "seeded validation split of a subject's training images")
    s.add_argument("--summary", required=True)
    s.add_argument("--fraction", type=float, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", required=True)

    s = add("regions", cmd_regions, "assign each vertex of a hemisphere to one region")
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--classes", type=json_arg, required=True, help="ROI classes in priority order, as JSON")
    s.add_argument("--out", required=True)

    s = add("targets", cmd_targets, "write each region's training fMRI as its own .npy (for per-region fit jobs)")
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--region-names", type=json_arg, required=True, help="every region of the plan, as JSON")
    s.add_argument("--outdir", required=True)

    s = add("pca", cmd_pca, "a feature set's PCA for one subject (or, pca.scope all, every subject), streamed "
            "from the feature stores")
    s.add_argument("--featureset", type=json_arg, required=True, help="the feature set's spec as JSON")
    s.add_argument("--summary", nargs="+", required=True, help="the subject's summary (every subject's: scope all)")
    s.add_argument("--split", nargs="+", required=True, help="the subject's split (every subject's, in that order)")
    s.add_argument("--store", nargs="+", required=True, help="BACKBONE=STORE for each backbone used")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)

    s = add("design", cmd_design, "a feature set's cached design (e.g. the ridge decomposition) for one subject")
    s.add_argument("--featureset", type=json_arg, required=True, help="the feature set's spec as JSON")
    s.add_argument("--design", type=json_arg, required=True, help='{"kind": ..., "params": {...}} as JSON')
    s.add_argument("--summary", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--store", nargs="*", default=[], help="BACKBONE=STORE for each backbone used")
    s.add_argument("--pca", default=None, help="the feature set's PCA (from `nsdflow pca`), when it has one")
    s.add_argument("--backend", default="numpy", help="auto, numpy, torch or torch_cuda")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)

    s = add("fit", cmd_fit, "fit a readout on one region, one hemisphere (--region hemisphere) or both "
            "hemispheres of a subject (--hemi both --region subject)")
    s.add_argument("--spec", type=json_arg, required=True,
                   help='{"readout": name, "class": "module:Class", "params": {...}, "cv_folds": K} as JSON')
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh", "both"])
    s.add_argument("--region", required=True, help="a region name, hemisphere, or subject (with --hemi both)")
    s.add_argument("--regions", nargs="+", required=True, help="the region table of each hemisphere (lh first)")
    s.add_argument("--summary", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--design", default=None, help="the cached design, for the readouts that fit from one")
    s.add_argument("--store", nargs="*", default=[], help="BACKBONE=STORE, for the readouts that read feature maps")
    s.add_argument("--targets", default=None, help="the region's fMRI from `nsdflow targets` (default: read the data)")
    s.add_argument("--pretrained", nargs="*", default=[], help="RUN=STATE of `nsdflow pretrain`, for each run")
    s.add_argument("--checkpoints", default=None, help="folder for the runs' resumable state (trained readouts)")
    s.add_argument("--key", default="", help="the job's rerun key: a checkpoint of another key is not resumed")
    s.add_argument("--backend", default="numpy", help="auto, numpy, torch or torch_cuda")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)

    s = add("pretrain", cmd_pretrain, "pretrain a readout on every subject for one run (the bottleneck network)")
    s.add_argument("--spec", type=json_arg, required=True, help="the model's fit spec, as JSON")
    s.add_argument("--run", required=True, help="val, test or k<i> (see nsdflow.readouts.folds)")
    s.add_argument("--designs", nargs="+", required=True, help="SUBJECT=DESIGN for every subject")
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--summaries", nargs="+", required=True, help="SUBJECT=SUMMARY for every subject")
    s.add_argument("--splits", nargs="+", required=True, help="SUBJECT=SPLIT for every subject")
    s.add_argument("--checkpoint", default=None, help="the pretraining's resumable state")
    s.add_argument("--key", default="")
    s.add_argument("--backend", default="numpy", help="auto, numpy, torch or torch_cuda")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True, help="the pretrained network (a torch state dict)")

    s = add("merge", cmd_merge, "merge a model's fits into full-hemisphere predictions")
    s.add_argument("--summary", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--fits", nargs="+", required=True)
    s.add_argument("--out", required=True)

    s = add("ensemble", cmd_ensemble, "combine models per region (best, mean, weighted) or per vertex (softmax)")
    s.add_argument("--name", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--select-on", default="oof", help="oof (fit images' out-of-fold predictions) or val")
    s.add_argument("--tau", type=float, default=0.025, help="softmax: temperature of the per-vertex weights")
    s.add_argument("--members", nargs="+", required=True, help="MODEL=MERGED_NPZ for each member")
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--out", required=True, help="the ensemble's predictions (npz, like a model's)")
    s.add_argument("--selection", required=True, help="which model won where (JSON)")

    s = add("selection", cmd_selection, "gather ensembles' selections into selection.csv / .parquet")
    s.add_argument("--selections", nargs="+", required=True)
    s.add_argument("--outdir", required=True)

    add("readout-params", cmd_readout_params, "list every readout's parameters and defaults")
