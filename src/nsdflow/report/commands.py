"""The report stage's commands (rules scores_page, plot_roi_bars, plot_models, plot_brain_map,
plot_attention, provenance): what ``snakemake --report`` gathers beside the tables."""

from __future__ import annotations

from pathlib import Path

from ..args import json_arg, pairs


def cmd_scores_page(a) -> None:
    import pandas as pd

    from ..io import atomic_write_text
    from .html import scores_html

    folder = Path(a.scores)
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("leaderboard", "by_subject_hemi", "by_roi")}
    atomic_write_text(a.out, scores_html(tables))


def cmd_plot_roi_bars(a) -> None:
    import pandas as pd

    from .plots import plot_roi_bars

    plot_roi_bars(pd.read_parquet(a.summary), a.subject, a.hemi, a.out, split=a.split)


def cmd_plot_models(a) -> None:
    import pandas as pd

    from .plots import plot_model_comparison

    plot_model_comparison(pd.read_parquet(a.summary), a.out, split=a.split)


def cmd_plot_brain_map(a) -> None:
    from .brainmap import OUTLINE_CLASSES, brain_map_figure, shared_vmax

    vmax = a.vmax if a.vmax is not None or not a.scores else shared_vmax(a.scores, a.column)
    info = brain_map_figure(pairs(a.vertices), a.data, a.subject, a.out, a.model, column=a.column, vmax=vmax,
                            cmap=a.cmap, mesh=a.mesh, outline=OUTLINE_CLASSES if a.outline is None else a.outline)
    print(f"{a.model} {a.subject}: {info['drawn']:,} of {info['vertices']:,} vertices drawn on fsaverage5, "
          f"colour scale {info['vmin']:g} to {info['vmax']:g} -> {a.out}")


def cmd_plot_attention(a) -> None:
    from ..io import load_npz, save_table
    from .attention import attention_figure, test_images

    fit: dict = {}
    for path in a.fits:  # one file for both hemispheres (lh.attention...), or one per hemisphere (attention...)
        arrays = {k: v for k, v in load_npz(path).items() if k.split(".")[-1].startswith("attention")}
        if "attention" in arrays:
            hemi = str(arrays["attention_queries"][0]).split(":")[0]
            arrays = {f"{hemi}.{k}": v for k, v in arrays.items()}
        fit.update(arrays)
    hemis = [h for h in ("lh", "rh") if f"{h}.attention" in fit]
    if not hemis:
        raise ValueError(f"{', '.join(a.fits)}: no attention maps (a transformer readout with ROI queries keeps them)")
    positions = sorted({int(i) for h in hemis for i in fit[f"{h}.attention_images"]})
    table = attention_figure(fit, test_images(a.data, a.subject, positions), a.out, f"{a.model} {a.subject}", hemis)
    table.insert(0, "subject", a.subject)
    table.insert(0, "model", a.model)
    save_table(table, a.csv)
    print(table.to_string(index=False, float_format=lambda x: f"{x:+.2f}"))


def cmd_provenance(a) -> None:
    from ..io import atomic_write_json, atomic_write_text, read_json
    from .provenance import collect_provenance, features_html, provenance_html

    manifests = {name: read_json(path) for name, path in pairs(a.manifests or []).items()}
    prov = collect_provenance(a.config, manifests, a.workflow_dir)
    atomic_write_json(a.out, prov)
    atomic_write_text(a.html, provenance_html(prov))
    atomic_write_text(a.features_html, features_html(prov))
    commit = prov["git"].get("commit") or "no git commit"
    print(f"provenance: nsdflow {prov['nsdflow_version']} ({commit}), {len(manifests)} backbones -> {a.html}")


def register(add) -> None:
    s = add("scores-page", cmd_scores_page, "the leaderboard's three aggregations as one HTML page")
    s.add_argument("--scores", required=True, help="the folder of the summary tables (results/scores)")
    s.add_argument("--out", required=True)

    s = add("plot-roi-bars", cmd_plot_roi_bars, "median r per ROI of one subject and hemisphere, a bar per model")
    s.add_argument("--summary", required=True, help="summary.parquet")
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--split", default="val")
    s.add_argument("--out", required=True, help="the PNG; the SVG is written beside it")

    s = add("plot-models", cmd_plot_models, "every model's score per ROI, subjects pooled, as a heatmap")
    s.add_argument("--summary", required=True, help="summary.parquet")
    s.add_argument("--split", default="val")
    s.add_argument("--out", required=True, help="the PNG; the SVG is written beside it")

    s = add("plot-brain-map", cmd_plot_brain_map, "a model's per-vertex r of one subject on fsaverage5")
    s.add_argument("--vertices", nargs="+", required=True, help="lh=PARQUET rh=PARQUET (per-vertex score tables)")
    s.add_argument("--data", required=True, help="data root (its all-vertices masks place the vertices)")
    s.add_argument("--subject", required=True)
    s.add_argument("--model", required=True, help="the model's name, for the title")
    s.add_argument("--column", default="r_val", help="r_val, r_test, score_val or score_test")
    s.add_argument("--vmax", type=float, default=None, help="top of the colour scale (bottom 0)")
    s.add_argument("--scores", help="scores.json; without --vmax its r percentiles set the scale")
    s.add_argument("--cmap", default="inferno", help="a matplotlib colour map")
    s.add_argument("--mesh", default="infl", choices=["infl", "pial", "white"], help="fsaverage5 mesh")
    s.add_argument("--outline", type=json_arg, default=None,
                   help="ROI classes to outline, as JSON (default: retinotopic and category ROIs)")
    s.add_argument("--out", required=True, help="the PNG; the SVG is written beside it")

    s = add("plot-attention", cmd_plot_attention, "where a transformer model's queries look, on a few test images")
    s.add_argument("--fits", nargs="+", required=True, help="the model's fit .npz of the subject (both hemispheres)")
    s.add_argument("--data", required=True, help="data root (the test images drawn under the maps)")
    s.add_argument("--subject", required=True)
    s.add_argument("--model", required=True, help="the model's name, for the title")
    s.add_argument("--out", required=True, help="the PNG; the SVG is written beside it")
    s.add_argument("--csv", required=True, help="the table of each query's centre of attention")

    s = add("provenance", cmd_provenance, "record how the results were made: config, backbones, packages, git")
    s.add_argument("--config", type=json_arg, required=True, help="the run's config, as JSON")
    s.add_argument("--manifests", nargs="*", help="BACKBONE=FEATURE_MANIFEST_JSON for each backbone")
    s.add_argument("--workflow-dir", help="the workflow's folder (for its git commit)")
    s.add_argument("--out", required=True, help="the provenance as JSON")
    s.add_argument("--html", required=True)
    s.add_argument("--features-html", required=True)
