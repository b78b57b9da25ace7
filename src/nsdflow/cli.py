"""``nsdflow``: the command line behind every workflow rule, usable by hand.

Each workflow rule runs one of these subcommands (``snakemake -p`` prints the exact command),
so any step can be rerun, debugged or timed outside Snakemake. ``nsdflow --help`` lists them;
``nsdflow <command> --help`` describes each.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("nsdflow")


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err


def _pairs(items: list[str]) -> dict[str, str]:
    """``key=value`` arguments to a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=PATH, got {item!r}")
        out[key] = value
    return out


# ----------------------------------------------------------------------------- data


def cmd_demo(a):
    import shutil

    from .demo import DemoConfig, generate

    for folder in (Path(a.root), Path(a.withheld)):
        if folder.exists() and any(folder.iterdir()):
            if not (folder / ".nsdflow-demo").exists():
                raise ValueError(f"{folder} exists and was not written by `nsdflow demo`; refusing to overwrite it")
            shutil.rmtree(folder)  # a changed demo config must not leave stale subjects behind
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".nsdflow-demo").touch()
    cfg = DemoConfig(seed=a.seed, n_subjects=a.subjects, n_train=a.n_train, n_test=a.n_test, n_shared=a.n_shared,
                     image_size=a.image_size, roi_dropout=a.roi_dropout)
    manifest = generate(a.root, a.withheld, cfg)
    print(f"demo dataset: {len(manifest['subjects'])} subjects, {manifest['n_unique_images']} unique images -> {a.root}")


def cmd_validate_data(a):
    from .data import list_subjects, validate_subject
    from .io import atomic_write_json

    from .layout import ROI_CLASSES

    subjects = a.subject or list_subjects(a.root)
    classes = tuple(ROI_CLASSES) if a.roi_classes is None else tuple(a.roi_classes)
    for subject in subjects:
        t0 = time.time()
        summary = validate_subject(a.root, subject, roi_classes=classes, check_finite=not a.no_finite_check,
                                   check_images=not a.no_image_check)
        nv = ", ".join(f"{h} {n}" for h, n in summary.n_vertices.items())
        print(f"{summary.subject}: {summary.n_train} training images, {summary.n_test} test images, "
              f"vertices {nv} - OK ({time.time() - t0:.1f} s)")
        if a.json:
            atomic_write_json(a.json if len(subjects) == 1 else Path(a.json) / f"{summary.subject}.json",
                              summary.to_dict())


def cmd_index_images(a):
    from .images import build_index
    from .io import save_table

    index = build_index(a.root, a.subjects)
    save_table(index, a.out)
    print(f"{len(index)} images, {index['nsd_id'].nunique()} unique NSD ids -> {a.out}")


def cmd_cache_images(a):
    from .images import build_image_cache, read_index

    base = a.hdf5_index_base if a.hdf5_index_base == "auto" else int(a.hdf5_index_base)
    info = build_image_cache(read_index(a.index), a.store, a.manifest, size=a.size, chunk=a.chunk, workers=a.workers,
                             source=a.source, hdf5=a.hdf5, hdf5_dataset=a.hdf5_dataset, index_base=base,
                             compression=a.compression)
    print(f"{info['n_images']} images at {info['size']} px from {a.source} -> {a.store} "
          f"({info['images_per_second']} images/s)")


def cmd_extract(a):
    from .features.extract import extract_features

    info = extract_features(a.name, a.spec, a.images, a.store, a.manifest, device=a.device, threads=a.threads,
                            shard=a.shard, shards=a.shards, readers=a.readers)
    print(f"{a.name}: shard {a.shard} of {a.shards}: {info['extracted_images']} of {info['n_images']} images "
          f"extracted, layers {', '.join(info['layers'])} ({info['images_per_second']} images/s on {info['device']})")


def cmd_check_backbone(a):
    from .features.preflight import check_backbone
    from .io import atomic_write_json

    info = check_backbone(a.name, a.spec)
    atomic_write_json(a.out, info)
    widths = ", ".join(f"{layer} {v['pool']} -> {v['width']}" for layer, v in info["layers"].items())
    print(f"{a.name}: {info['kind']} {info['model'] or ''} at {info['input_size']} px, weights "
          f"{info['weights']['init']}; {widths} ({info['seconds']} s)")


def cmd_combine_features(a):
    from .features.combine import combine_features  # no torch: a light job

    info = combine_features(a.store, a.shard_manifests, a.manifest)
    print(f"{a.store}: {info['n_images']} images, every chunk done, from {info['shards']} shard(s) -> {a.manifest}")


def cmd_split(a):
    from .io import atomic_write_json, read_json
    from .split import make_split

    summary = read_json(a.summary)
    split = make_split(summary["n_train"], a.fraction, a.seed, summary["subject"])
    atomic_write_json(a.out, split)


def cmd_regions(a):
    from .regions import region_table, save_region_table

    table = region_table(a.root, a.subject, a.hemi, a.classes)
    save_region_table(table, a.out)
    counts = table["region"].value_counts()
    print(f"{a.subject} {a.hemi}: {len(table)} vertices in {counts.size} regions")


def cmd_pca(a):
    from .readouts.backend import set_threads

    set_threads(a.threads)
    from .readouts.pipeline import build_pca

    build_pca(a.featureset, a.summary, a.split, _pairs(a.store), a.out)


def cmd_design(a):
    from .readouts.backend import set_threads

    set_threads(a.threads)
    from .readouts.pipeline import build_design_file

    build_design_file(a.featureset, a.design["kind"], a.design.get("params", {}), a.summary, a.split,
                      _pairs(a.store or []), a.out, pca_path=a.pca, backend=a.backend)


def cmd_fit(a):
    from .readouts.backend import set_threads

    set_threads(a.threads)
    from .readouts.pipeline import fit_unit

    fit_unit(a.spec["readout"], a.spec.get("params", {}), a.design, a.data, a.subject, a.hemi, a.regions, a.region,
             a.out, backend=a.backend, targets=a.targets)


def cmd_targets(a):
    from .readouts.pipeline import split_targets

    counts = split_targets(a.data, a.subject, a.hemi, a.regions, a.region_names, a.outdir)
    print(f"{a.subject} {a.hemi}: {sum(counts.values())} vertices in {sum(1 for c in counts.values() if c)} regions "
          f"-> {a.outdir}")


def cmd_ensemble(a):
    from .readouts.pipeline import build_ensemble

    build_ensemble(a.name, a.method, _pairs(a.members), a.data, a.subject, a.hemi, a.regions, a.split, a.out,
                   a.selection)


def cmd_selection_table(a):
    from .readouts.pipeline import selection_table

    table = selection_table(a.selections, a.outdir)
    won = table[table["chosen"]].groupby(["ensemble", "model"]).size()
    print(f"{len(table)} rows -> {a.outdir}/selection.csv; regions won or weighted per model:")
    print(won.to_string())


def cmd_readout_params(a):
    from .readouts import describe_params

    print(describe_params())


def cmd_merge(a):
    from .evaluate import merge_predictions
    from .io import read_json

    n_vertices = read_json(a.summary)["n_vertices"][a.hemi]
    merge_predictions(a.fits, n_vertices, a.out)


def cmd_score_hemi(a):
    from .evaluate import score_hemisphere

    table = score_hemisphere(a.pred, a.data, a.withheld, a.subject, a.hemi, a.regions, a.split, a.out)
    msg = f"{a.subject} {a.hemi}: mean r {table['r_val'].fillna(0).mean():.4f} (val)"
    if "score_val" in table:
        msg += f", score {table['score_val'].mean():.2f}"
    print(msg)


def cmd_score(a):
    """Public scoring: arrays in, JSON out."""
    import numpy as np

    from .scoring import noise_ceiling_fraction, noise_normalized_score, pearson_columns

    pred, true = np.load(a.pred), np.load(a.true)
    r = pearson_columns(true, pred)
    out = {"n_images": int(true.shape[0]), "n_vertices": int(r.size), "mean_r": float(np.nan_to_num(r).mean()),
           "median_r": float(np.median(np.nan_to_num(r))), "n_constant": int(np.isnan(r).sum())}
    if a.noise_ceiling:
        nc, unit = noise_ceiling_fraction(np.load(a.noise_ceiling))
        if nc.shape != r.shape:
            raise ValueError(f"{a.noise_ceiling}: {nc.size} noise ceilings for {r.size} vertices")
        out["noise_ceiling_unit"] = unit
        out["score"] = float(noise_normalized_score(r, nc).mean())
    if a.per_vertex:
        np.save(a.per_vertex, r)
    text = json.dumps(out, indent=2)
    if a.out:
        from .io import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    print(text)


def cmd_summarize(a):
    import pandas as pd

    from .evaluate import load_vertex_tables, summarize, write_summaries
    from .io import atomic_write_json

    from .evaluate import r_percentiles
    from .io import atomic_write_text
    from .report import scores_html

    paths = {tuple(k.split(":")): v for k, v in _pairs(a.vertices).items()}
    vertices = load_vertex_tables(paths)
    tables = summarize(vertices, a.classes)
    write_summaries(tables, a.outdir)
    board = tables["leaderboard"]
    atomic_write_json(Path(a.outdir) / "scores.json", {
        "leaderboard": board.to_dict(orient="records"),
        "r_percentiles": r_percentiles(vertices),
        "note": "challenge_score: mean over all vertices of all subjects and hemispheres of 100*min(max(r,0)^2/NC, 1)",
    })
    atomic_write_text(Path(a.outdir) / "scores.html", scores_html(tables))
    for _, row in board.iterrows():
        score = "" if pd.isna(row["challenge_score"]) else (
            f", challenge score {row['challenge_score']:.2f} (chance {row['chance_score']:.2f})")
        print(f"{row['model']} [{row['split']}]: mean r {row['mean_r']:.4f}, median r {row['median_r']:.4f}{score}")


def cmd_plot(a):
    import pandas as pd

    from .plots import plot_model_comparison, plot_roi_bars

    if a.kind == "brain-map":
        from .brainmap import OUTLINE_CLASSES, brain_map_figure
        from .io import read_json

        vmax = a.vmax
        if vmax is None and a.scores:
            # One colour scale for every model and subject: the run's 99th percentile of r.
            from .brainmap import auto_vmax

            p99 = read_json(a.scores).get("r_percentiles", {}).get(a.column.rsplit("_", 1)[-1], {}).get("p99")
            vmax = auto_vmax([p99]) if p99 is not None and a.column.startswith("r_") else None
        info = brain_map_figure(_pairs(a.vertices), a.data, a.subject, a.out, a.model, column=a.column, vmax=vmax,
                                cmap=a.cmap, mesh=a.mesh, outline=OUTLINE_CLASSES if a.outline is None else a.outline)
        print(f"{a.model} {a.subject}: {info['drawn']:,} of {info['vertices']:,} vertices drawn on fsaverage5, "
              f"colour scale {info['vmin']:g} to {info['vmax']:g} -> {a.out}")
        return
    summary = pd.read_parquet(a.summary)
    if a.kind == "roi-bars":
        plot_roi_bars(summary, a.subject, a.hemi, a.out, split=a.split)
    elif a.kind == "models":
        plot_model_comparison(summary, a.out, split=a.split)


def cmd_submit(a):
    from .io import load_npz
    from .submission import assemble_submission, check_submission

    preds = {}
    for key, path in _pairs(a.pred).items():
        subject, hemi = key.split(":")
        preds[(subject, hemi)] = load_npz(path)["test_pred"]
    assemble_submission(preds, a.out)
    print(f"{len(preds)} prediction arrays -> {a.out}")
    if a.no_check:
        return
    report = check_submission(a.out, a.data)
    print(report)
    if not report.ok:
        Path(a.out).unlink(missing_ok=True)
        raise SystemExit(1)


def cmd_check_submission(a):
    from .submission import check_submission

    report = check_submission(a.zip, a.data)
    print(report)
    if a.out:
        from .io import atomic_write_text

        if report.ok:
            atomic_write_text(a.out, f"{a.zip}\n{report}\n")
        else:
            Path(a.out).unlink(missing_ok=True)
    if not report.ok:
        print(f"nsdflow check-submission: {a.zip} would be rejected: {len(report.errors)} problems (listed above)",
              file=sys.stderr)
        raise SystemExit(1)


def cmd_provenance(a):
    from .io import atomic_write_json, atomic_write_text, read_json
    from .report import collect_provenance, features_html, provenance_html

    manifests = {name: read_json(path) for name, path in _pairs(a.manifests or []).items()}
    prov = collect_provenance(a.config, manifests, a.workflow_dir)
    atomic_write_json(a.json, prov)
    atomic_write_text(a.html, provenance_html(prov))
    atomic_write_text(a.features_html, features_html(prov))
    commit = prov["git"].get("commit") or "no git commit"
    print(f"provenance: nsdflow {prov['nsdflow_version']} ({commit}), {len(manifests)} backbones -> {a.html}")


def cmd_config_help(a):
    import textwrap

    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())

    def walk(node, path, depth):
        desc = " ".join(str(node.get("description", "")).split())
        default = f" [default: {json.dumps(node['default'])}]" if "default" in node else ""
        kind = node.get("type", "one of" if "oneOf" in node else "")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        if path:
            print("  " * depth + f"{path} ({kind}){default}")
            for line in textwrap.wrap(desc, 96 - 2 * depth):
                print("  " * depth + "    " + line)
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}" if path else key, depth + (1 if path else 0))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{path}.<name>", depth + 1)

    walk(schema, "", 0)


SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nsdflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    s = add("demo", cmd_demo, "generate the demo dataset (Algonauts layout + withheld test responses and ceilings)")
    s.add_argument("--root", required=True, help="where to write the public layout (subjXX/...)")
    s.add_argument("--withheld", required=True, help="where to write test fMRI, noise ceilings, ground truth")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--subjects", type=int, default=2)
    s.add_argument("--n-train", type=int, default=300)
    s.add_argument("--n-test", type=int, default=50)
    s.add_argument("--n-shared", type=int, default=60)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--roi-dropout", type=float, default=0.1)

    s = add("validate-data", cmd_validate_data, "check a data root against the Algonauts 2023 layout")
    s.add_argument("root", help="data root holding subjXX/ folders")
    s.add_argument("--subject", action="append", help="subject to check (repeatable); default: all in the root")
    s.add_argument("--roi-classes", nargs="*", default=None, help="ROI classes that must be present (default: all six)")
    s.add_argument("--no-finite-check", action="store_true", help="skip the NaN/inf scan of the fMRI")
    s.add_argument("--no-image-check", action="store_true",
                   help="skip verifying that every PNG is complete and uncorrupted")
    s.add_argument("--json", help="write the summary as JSON (a file for one subject, a folder for several)")

    s = add("index-images", cmd_index_images, "list every subject's images and NSD ids (CSV)")
    s.add_argument("root")
    s.add_argument("--subjects", nargs="+", required=True)
    s.add_argument("--out", required=True)

    s = add("cache-images", cmd_cache_images, "decode each unique image once into a uint8 Zarr cache")
    s.add_argument("--index", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--size", type=int, default=None, help="cached side in px (default: the images' own)")
    s.add_argument("--chunk", type=int, default=64)
    s.add_argument("--workers", type=int, default=1, help="decoding processes")
    s.add_argument("--source", choices=["png", "hdf5"], default="png",
                   help="decode the PNGs, or read NSD's nsd_stimuli.hdf5 (--hdf5)")
    s.add_argument("--hdf5", default=None, help="path of nsd_stimuli.hdf5 (--source hdf5)")
    s.add_argument("--hdf5-dataset", default="imgBrick")
    s.add_argument("--hdf5-index-base", choices=["auto", "0", "1"], default="auto",
                   help="NSD id k is HDF5 row k (0) or k-1 (1); auto: compare a few PNGs with the file")
    s.add_argument("--compression", choices=["none", "zstd"], default="none")

    s = add("extract", cmd_extract, "extract one backbone's layers for every cached image into a Zarr store")
    s.add_argument("--name", required=True)
    s.add_argument("--spec", type=_json_arg, required=True, help="the backbone's config as JSON")
    s.add_argument("--images", required=True, help="image cache store")
    s.add_argument("--store", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--shard", type=int, default=0, help="which shard (0-based) of --shards this job extracts")
    s.add_argument("--shards", type=int, default=1, help="independent jobs sharing the store's chunks")
    s.add_argument("--readers", type=int, default=2, help="threads reading the image cache ahead of the model")

    s = add("check-backbone", cmd_check_backbone,
            "preflight: build a backbone on the CPU and pool one image through its layers (before extraction)")
    s.add_argument("--name", required=True)
    s.add_argument("--spec", type=_json_arg, required=True, help="the backbone's config as JSON")
    s.add_argument("--out", required=True, help="JSON: each layer's layout, shape and pooled width")

    s = add("combine-features", cmd_combine_features,
            "check that every chunk of a feature store is done and write its manifest")
    s.add_argument("--store", required=True)
    s.add_argument("--shard-manifests", nargs="+", required=True, help="the manifest of every shard")
    s.add_argument("--manifest", required=True)

    s = add("split", cmd_split, "seeded validation split of a subject's training images")
    s.add_argument("--summary", required=True)
    s.add_argument("--fraction", type=float, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--out", required=True)

    s = add("regions", cmd_regions, "assign each vertex of a hemisphere to one region")
    s.add_argument("root")
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--classes", type=_json_arg, required=True, help="ROI classes in priority order, as JSON")
    s.add_argument("--out", required=True)

    s = add("pca", cmd_pca, "a feature set's PCA for one subject, streamed from the feature stores")
    s.add_argument("--featureset", type=_json_arg, required=True, help="the feature set's spec as JSON")
    s.add_argument("--summary", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--store", nargs="+", required=True, help="BACKBONE=STORE for each backbone used")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)

    s = add("design", cmd_design, "a feature set's cached design (e.g. the ridge decomposition) for one subject")
    s.add_argument("--featureset", type=_json_arg, required=True, help="the feature set's spec as JSON")
    s.add_argument("--design", type=_json_arg, required=True, help='{"kind": ..., "params": {...}} as JSON')
    s.add_argument("--summary", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--store", nargs="*", default=[], help="BACKBONE=STORE for each backbone used")
    s.add_argument("--pca", default=None, help="the feature set's PCA (from `nsdflow pca`), when it has one")
    s.add_argument("--backend", default="numpy", help="auto, numpy, torch or torch_cuda")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)

    s = add("fit", cmd_fit, "fit one region (or every region: --region hemisphere) of one hemisphere")
    s.add_argument("--spec", type=_json_arg, required=True, help='{"readout": ..., "params": {...}} as JSON')
    s.add_argument("--design", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--region", required=True, help="a region name, or hemisphere for all regions")
    s.add_argument("--targets", default=None, help="the region's fMRI from `nsdflow targets` (default: read the data)")
    s.add_argument("--backend", default="numpy", help="auto, numpy, torch or torch_cuda")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)

    s = add("targets", cmd_targets, "write each region's training fMRI as its own .npy (for per-region fit jobs)")
    s.add_argument("--data", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--region-names", type=_json_arg, required=True, help="every region of the plan, as JSON")
    s.add_argument("--outdir", required=True)

    s = add("ensemble", cmd_ensemble, "combine models per region (best, mean or weighted on the validation split)")
    s.add_argument("--name", required=True)
    s.add_argument("--method", required=True, choices=["best", "mean", "weighted"])
    s.add_argument("--members", nargs="+", required=True, help="MODEL=MERGED_NPZ for each member")
    s.add_argument("--data", required=True)
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--out", required=True, help="the ensemble's predictions (npz, like a model's)")
    s.add_argument("--selection", required=True, help="which model won where (JSON)")

    s = add("selection-table", cmd_selection_table, "gather ensembles' selections into selection.csv / .parquet")
    s.add_argument("--selections", nargs="+", required=True)
    s.add_argument("--outdir", required=True)

    add("readout-params", cmd_readout_params, "list every readout's parameters and defaults")

    s = add("merge", cmd_merge, "merge region fits into full-hemisphere predictions")
    s.add_argument("--summary", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--fits", nargs="+", required=True)
    s.add_argument("--out", required=True)

    s = add("score-hemi", cmd_score_hemi, "per-vertex scores of one model on one hemisphere (Parquet)")
    s.add_argument("--pred", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--withheld", default=None)
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--out", required=True)

    s = add("score", cmd_score, "score predictions against responses: Pearson r and the challenge score, as JSON")
    s.add_argument("--pred", required=True, help=".npy predictions (images x vertices)")
    s.add_argument("--true", required=True, help=".npy measured responses (images x vertices)")
    s.add_argument("--noise-ceiling", help=".npy per-vertex noise ceilings (percent or fraction, detected)")
    s.add_argument("--per-vertex", help="also save per-vertex r as .npy")
    s.add_argument("--out", help="write the JSON here too")

    s = add("summarize", cmd_summarize, "tidy summary tables of per-vertex scores (CSV + Parquet)")
    s.add_argument("--vertices", nargs="+", required=True, help="MODEL:SUBJECT:HEMI=PARQUET")
    s.add_argument("--classes", type=_json_arg, default=None)
    s.add_argument("--outdir", required=True)

    s = add("plot", cmd_plot, "draw a figure: ROI bars or model comparison (from the summary), or a brain map")
    s.add_argument("kind", choices=["roi-bars", "models", "brain-map"])
    s.add_argument("--summary", help="summary.parquet (roi-bars, models)")
    s.add_argument("--subject")
    s.add_argument("--hemi")
    s.add_argument("--split", default="val")
    s.add_argument("--out", required=True, help="the PNG; the SVG is written beside it")
    s.add_argument("--vertices", nargs="+", help="brain-map: lh=PARQUET rh=PARQUET (per-vertex score tables)")
    s.add_argument("--data", help="brain-map: data root (its all-vertices masks place the vertices)")
    s.add_argument("--model", help="brain-map: the model's name, for the title")
    s.add_argument("--column", default="r_val", help="brain-map: r_val, r_test, score_val or score_test")
    s.add_argument("--vmax", type=float, default=None, help="brain-map: top of the colour scale (bottom 0)")
    s.add_argument("--scores", help="brain-map: scores.json; without --vmax its r percentiles set the scale")
    s.add_argument("--cmap", default="inferno", help="brain-map: a matplotlib colour map")
    s.add_argument("--mesh", default="infl", choices=["infl", "pial", "white"], help="brain-map: fsaverage5 mesh")
    s.add_argument("--outline", type=_json_arg, default=None,
                   help="brain-map: ROI classes to outline, as JSON (default: retinotopic and category ROIs)")

    s = add("submit", cmd_submit, "assemble the submission zip from merged predictions, then check it")
    s.add_argument("--pred", nargs="+", required=True, help="SUBJECT:HEMI=MERGED_NPZ")
    s.add_argument("--data", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--no-check", action="store_true", help="assemble only (check with `nsdflow check-submission`)")

    add("config-help", cmd_config_help, "describe every config key (from the workflow's JSON schema)")

    s = add("check-submission", cmd_check_submission, "check a submission zip against a data root")
    s.add_argument("zip")
    s.add_argument("--data", required=True, help="data root (gives the expected shapes)")
    s.add_argument("--out", help="write the check's report here when the zip passes (removed when it fails)")

    s = add("provenance", cmd_provenance, "record how the results were made: config, backbones, packages, git")
    s.add_argument("--config", type=_json_arg, required=True, help="the run's config, as JSON")
    s.add_argument("--manifests", nargs="*", help="BACKBONE=FEATURE_MANIFEST_JSON for each backbone")
    s.add_argument("--workflow-dir", help="the workflow's folder (for its git commit)")
    s.add_argument("--json", required=True)
    s.add_argument("--html", required=True)
    s.add_argument("--features-html", required=True)
    return p


def _report_error(command: str, msg) -> None:
    # On a line of its own: a progress bar may have left the cursor mid-line.
    sys.stderr.write(f"\nnsdflow {command}: error: {msg}\n")


def _out_of_memory(args, err: BaseException) -> str | None:
    """What to change when a command ran out of GPU or host memory (None for other errors)."""
    name = getattr(args, "name", None)
    if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        first = str(err).split("\n")[0].split(". ")[0]
        if args.command == "extract" and name:
            return f"the GPU ran out of memory ({first}): lower backbones.{name}.batch_size in the config and rerun"
        return (f"the GPU ran out of memory ({first}): free the GPU, or set readouts.backend: numpy "
                "to fit on the CPU")
    if isinstance(err, MemoryError):
        return (f"ran out of memory ({err or 'MemoryError'}): give this job more (set-resources: "
                f"<rule>: mem_mb in the profile; extraction.mem_mb for extraction) or run fewer jobs at once")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from .data import DataError
    from .io import OutputError, explain_os_error

    # Errors that carry a message meant for the user (BackboneError, PoolingError are ValueErrors).
    known = (DataError, OutputError, ValueError, KeyError, FileNotFoundError, RuntimeError)
    try:
        args.fn(args)
    except (MemoryError, RuntimeError) as err:
        msg = _out_of_memory(args, err)
        if msg is None or args.debug:
            if isinstance(err, MemoryError) or args.debug:
                raise
            msg = err  # any other RuntimeError: its message is meant for the user
        _report_error(args.command, msg)
        return 1
    except known as err:
        if args.debug:
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        _report_error(args.command, msg)
        return 1
    except OSError as err:
        # A full disk or an unwritable folder, wherever it surfaced (zarr, numpy, PIL): say so plainly.
        # write() errors carry no file name: name what this command was writing instead.
        outputs = [str(getattr(args, k)) for k in ("store", "out", "outdir", "manifest", "json") if getattr(args, k, None)]
        msg = explain_os_error(err, None if err.filename else " / ".join(outputs) or None)
        if msg is None or args.debug:
            raise
        _report_error(args.command, msg)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
