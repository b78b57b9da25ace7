"""Merge region predictions into hemispheres, score them per vertex, and summarise the scores.

Tables are tidy (one row per model, split, subject, hemisphere, ROI) and written as CSV and
Parquet, so that ``pd.read_csv("results/scores/summary.csv")`` is all a researcher needs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .data import load_fmri, load_withheld
from .io import load_npz, read_json, save_npz, save_table
from .layout import ROI_CLASSES, UNKNOWN
from .regions import load_region_table
from .scoring import noise_ceiling_fraction, noise_normalized_score, pearson_columns

log = logging.getLogger(__name__)

SPLIT_LABELS = {"val": "validation (held-out training images)", "test": "test (withheld responses)"}


# ----------------------------------------------------------------------------- merge


def merge_predictions(fit_paths: list[str | Path], n_vertices: int, out: str | Path) -> None:
    """Assemble region fits into full-hemisphere arrays in vertex order; every vertex exactly once."""
    cover = np.zeros(n_vertices, dtype=np.int64)
    merged: dict[str, np.ndarray] = {}
    for path in fit_paths:
        fit = load_npz(path)
        v = fit["vertices"]
        if v.size and (v.min() < 0 or v.max() >= n_vertices):
            raise ValueError(f"{path}: vertex indices outside 0..{n_vertices - 1}")
        cover[v] += 1
        for key, value in fit.items():
            if key == "vertices":
                continue
            if key not in merged:
                shape = (value.shape[0], n_vertices) if value.ndim == 2 else (n_vertices,)
                merged[key] = np.full(shape, np.nan, dtype=np.float32 if value.ndim == 2 else np.float64)
            if value.ndim == 2:
                merged[key][:, v] = value
            else:
                merged[key][v] = value
    missing, doubled = np.flatnonzero(cover == 0), np.flatnonzero(cover > 1)
    if missing.size or doubled.size:
        raise ValueError(f"region fits do not partition the hemisphere: {missing.size} vertices uncovered "
                         f"(e.g. {missing[:5].tolist()}), {doubled.size} covered twice (e.g. {doubled[:5].tolist()})")
    for key in ("val_pred", "test_pred"):
        if key not in merged:
            raise ValueError(f"no fit provided {key}")
        if not np.isfinite(merged[key]).all():
            raise ValueError(f"merged {key} holds non-finite predictions")
    save_npz(out, **merged)


# ----------------------------------------------------------------------------- score


def chance_score(y: np.ndarray, pred: np.ndarray, nc: np.ndarray, n_perm: int = 10, seed: int = 0) -> np.ndarray:
    """Per-vertex noise-normalised score of predictions matched to the wrong images.

    The score squares positive correlations, so with few images even an unrelated prediction
    scores well above 0 (about 100 / (2 (n - 1) NC) per vertex); this is that floor, averaged
    over ``n_perm`` shuffles of the predictions' rows, to read a model's score against.
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(y.shape[1])
    for _ in range(n_perm):
        total += noise_normalized_score(pearson_columns(y, pred[rng.permutation(len(pred))]), nc)
    return total / n_perm


def score_hemisphere(
    pred_path: str | Path,
    data_root: str | Path,
    withheld_root: str | Path | None,
    subject: str,
    hemi: str,
    regions_path: str | Path,
    split_path: str | Path,
    out: str | Path,
) -> pd.DataFrame:
    """Per-vertex scores of one model on one hemisphere, written as a Parquet table.

    Columns: ``vertex, region, <one column per ROI class>, r_val, nc, score_val`` and, where the
    withheld test responses exist (the demo), ``r_test, score_test``.
    """
    pred = load_npz(pred_path)
    split = read_json(split_path)
    table = load_region_table(regions_path)
    fmri = load_fmri(data_root, subject, hemi)
    y_val = np.asarray(fmri[np.asarray(split["val"])], dtype=np.float32)
    r_val = pearson_columns(y_val, pred["val_pred"])
    table["r_val"] = r_val
    nc = load_withheld(withheld_root, subject, hemi, "noise_ceiling") if withheld_root else None
    if nc is not None:
        nc, unit = noise_ceiling_fraction(nc, f"{subject} {hemi} noise ceiling")
        if nc.shape != r_val.shape:
            raise ValueError(f"{subject} {hemi}: {nc.size} noise ceilings for {r_val.size} vertices")
        table["nc"] = nc
        table["score_val"] = noise_normalized_score(r_val, nc)
        table["chance_val"] = chance_score(y_val, pred["val_pred"], nc)
    test = load_withheld(withheld_root, subject, hemi, "test_fmri") if withheld_root else None
    if test is not None:
        r_test = pearson_columns(test, pred["test_pred"])
        table["r_test"] = r_test
        if nc is not None:
            table["score_test"] = noise_normalized_score(r_test, nc)
            table["chance_test"] = chance_score(test, pred["test_pred"], nc)
    if "val.alpha" in pred:
        table["alpha"] = pred["val.alpha"]
    n_nan = int(np.isnan(r_val).sum())
    if n_nan:
        log.warning("%s %s: %d vertices have a constant prediction or response; their r counts as 0", subject, hemi,
                    n_nan)
    save_table(table, out)
    return table


# ----------------------------------------------------------------------------- summarise


def _stats(frame: pd.DataFrame, split: str) -> dict:
    r = frame[f"r_{split}"].to_numpy(np.float64)
    r0 = np.nan_to_num(r, nan=0.0)
    q25, q50, q75 = np.percentile(r0, [25, 50, 75]) if len(r) else (np.nan, np.nan, np.nan)
    out = {
        "n_vertices": int(len(frame)),
        "mean_r": float(r0.mean()) if len(r) else np.nan,
        "median_r": float(q50),
        "q25_r": float(q25),
        "q75_r": float(q75),
    }
    col = f"score_{split}"
    out["mean_score"] = float(frame[col].mean()) if col in frame and len(frame) else np.nan
    col = f"chance_{split}"
    out["chance_score"] = float(frame[col].mean()) if col in frame and len(frame) else np.nan
    out["mean_nc"] = float(frame["nc"].mean() * 100) if "nc" in frame and len(frame) else np.nan
    return out


SUMMARY_COLUMNS = ["model", "split", "subject", "hemi", "roi_class", "roi", "n_vertices", "mean_r", "median_r",
                   "q25_r", "q75_r", "mean_score", "chance_score", "mean_nc"]


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation (``np.percentile``'s default), so quantiles match it bit for bit."""
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def _grouped_stats(gid: np.ndarray, n_groups: int, r_order: np.ndarray, r0: np.ndarray,
                   extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Count, mean, quartiles of ``r0`` and means of ``extra`` columns per group id, without a loop.

    ``r_order`` is ``np.argsort(r0)``: a stable sort of the group ids along it leaves every
    group's values sorted, so each quantile is read off at its position.
    """
    n = np.bincount(gid, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"n_vertices": n, "mean_r": np.bincount(gid, r0, n_groups) / n}
        key = gid[r_order].astype(np.int16 if n_groups < 2**15 else np.int64)  # small ints: a radix sort
        order = r_order[np.argsort(key, kind="stable")]
        sorted_r = r0[order]
        start = np.cumsum(n) - n
        safe = np.maximum(n - 1, 0)
        for q, name in ((0.25, "q25_r"), (0.5, "median_r"), (0.75, "q75_r")):
            pos = q * safe
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, safe)
            value = _lerp(sorted_r[np.minimum(start + lo, len(r0) - 1)], sorted_r[np.minimum(start + hi, len(r0) - 1)],
                          pos - lo) if len(r0) else np.zeros(n_groups)
            out[name] = np.where(n > 0, value, np.nan)
        for name, values in extra.items():
            out[name] = np.bincount(gid, values, n_groups) / n
    return out


def _codes(values: pd.Series, categories: list) -> np.ndarray:
    """Index of each value in ``categories`` (every value must be one of them)."""
    codes, uniques = pd.factorize(values)
    lookup = {v: i for i, v in enumerate(categories)}
    return np.array([lookup[u] for u in uniques], dtype=np.int64)[codes]


def _summary_rows(frame: pd.DataFrame, split: str, classes: list[str]) -> pd.DataFrame:
    """:func:`_stats` of every scope (all, subject, subject x hemi, hemi) x ROI, vectorised.

    Every ROI of each class gets a row in every scope, with ``n_vertices`` 0 and NaN statistics
    where it has no vertex; ``Unknown`` rows hold a class's vertices in none of its ROIs.
    """
    n = len(frame)
    r0 = np.nan_to_num(frame[f"r_{split}"].to_numpy(np.float64), nan=0.0)
    r_order = np.argsort(r0, kind="stable")
    nan = np.full(n, np.nan)
    extra = {
        "mean_score": frame[f"score_{split}"].to_numpy(np.float64) if f"score_{split}" in frame else nan,
        "chance_score": frame[f"chance_{split}"].to_numpy(np.float64) if f"chance_{split}" in frame else nan,
        "mean_nc": frame["nc"].to_numpy(np.float64) * 100 if "nc" in frame else nan,
    }
    subjects = sorted(frame["subject"].unique())
    hemis = sorted(frame["hemi"].unique())
    subj = _codes(frame["subject"], subjects)
    hemi = _codes(frame["hemi"], hemis)
    scopes = {  # scope -> (group id of each vertex, labels (subject, hemi) of each group)
        "all": (np.zeros(n, np.int64), [("all", "all")]),
        "subject": (subj, [(s, "all") for s in subjects]),
        "subject_hemi": (subj * len(hemis) + hemi, [(s, h) for s in subjects for h in hemis]),
        "hemi": (hemi, [("all", h) for h in hemis]),
    }
    out = []
    for cls in ["all", *classes]:
        rois = ["all"] if cls == "all" else [*ROI_CLASSES[cls], UNKNOWN]
        if cls == "all":
            roi = np.zeros(n, np.int64)
        elif cls in frame:
            roi = _codes(frame[cls], rois)
        else:
            roi = np.full(n, len(rois) - 1, np.int64)  # a class the data lacks: every vertex Unknown
        for scope_gid, labels in scopes.values():
            stats = _grouped_stats(scope_gid * len(rois) + roi, len(labels) * len(rois), r_order, r0, extra)
            table = pd.DataFrame({
                "subject": [s for s, _ in labels for _ in rois], "hemi": [h for _, h in labels for _ in rois],
                "roi_class": cls, "roi": rois * len(labels), **stats,
            })
            out.append(table)
    return pd.concat(out, ignore_index=True)


def _order(summary: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Rows in reading order: model and split as given, ``all`` first, ROIs in the challenge's order."""
    roi_order = ["all"] + [r for c in ROI_CLASSES for r in ROI_CLASSES[c]] + [UNKNOWN]
    keys = {
        "model": list(dict.fromkeys(summary["model"])), "split": ["val", "test"],
        "subject": ["all"] + sorted(set(summary["subject"]) - {"all"}), "hemi": ["all", "lh", "rh"],
        "roi_class": ["all", *classes], "roi": roi_order,
    }
    rank = {k: summary[k].map({v: i for i, v in enumerate(order)}) for k, order in keys.items()}
    order = np.lexsort([rank[k].to_numpy() for k in reversed(keys)])
    return summary.iloc[order][SUMMARY_COLUMNS].reset_index(drop=True)


def load_vertex_tables(paths: dict[tuple[str, str, str], str | Path]) -> pd.DataFrame:
    """Concatenate per-vertex tables keyed by (model, subject, hemi)."""
    frames = []
    for (model, subject, hemi), path in paths.items():
        df = pd.read_parquet(path)
        df.insert(0, "hemi", hemi)
        df.insert(0, "subject", subject)
        df.insert(0, "model", model)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def summarize(vertices: pd.DataFrame, roi_classes: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Tidy summaries of per-vertex scores.

    Returns
    -------
    dict with
        ``summary``: one row per model, split, subject, hemi, roi_class, roi (``all`` rows
        aggregate), with n_vertices, mean_r, median_r, mean_score (the organisers' score,
        NaN without noise ceilings) and mean_nc (percent);
        ``leaderboard``: one row per model and split: the challenge score over all vertices of
        all subjects and hemispheres, and mean and median r;
        ``by_subject_hemi``: the leaderboard's second aggregation, one row per model, split,
        subject and hemisphere (all vertices of that hemisphere);
        ``by_roi``: its third, one row per model, split and ROI, the ROI's vertices pooled over
        every subject and hemisphere (``n_vertices`` 0 and NaN statistics for an ROI absent
        everywhere). Both are views of ``summary``.

    ``mean_r``, ``median_r``, ``q25_r``, ``q75_r`` count a NaN r (constant prediction or
    response) as 0, as the challenge score does.
    """
    classes = [c for c in ROI_CLASSES if c in vertices.columns] if roi_classes is None else roi_classes
    splits = [s for s in ("val", "test") if f"r_{s}" in vertices.columns and vertices[f"r_{s}"].notna().any()]
    parts, board = [], []
    for model, by_model in vertices.groupby("model", sort=False):
        for split in splits:
            board.append({"model": model, "split": split, **_stats(by_model, split)})
            parts.append(_summary_rows(by_model, split, classes).assign(model=model, split=split))
    summary = _order(pd.concat(parts, ignore_index=True), classes)
    leaderboard = pd.DataFrame(board).rename(columns={"mean_score": "challenge_score"})
    real = (summary["subject"] != "all") & (summary["hemi"] != "all")
    by_subject_hemi = summary[real & (summary["roi_class"] == "all")].drop(columns=["roi_class", "roi"])
    pooled = (summary["subject"] == "all") & (summary["hemi"] == "all") & (summary["roi_class"] != "all")
    by_roi = summary[pooled].drop(columns=["subject", "hemi"])
    return {"summary": summary, "leaderboard": leaderboard,
            "by_subject_hemi": by_subject_hemi.reset_index(drop=True), "by_roi": by_roi.reset_index(drop=True)}


def r_percentiles(vertices: pd.DataFrame, q=(1, 50, 99)) -> dict[str, dict[str, float]]:
    """Percentiles of per-vertex r over every model, subject and hemisphere, per split.

    The brain maps take their shared colour scale from these, so that maps of different
    models and subjects read alike.
    """
    out = {}
    for split in ("val", "test"):
        col = f"r_{split}"
        if col in vertices and vertices[col].notna().any():
            values = np.percentile(vertices[col].dropna().to_numpy(np.float64), q)
            out[split] = {f"p{k}": float(v) for k, v in zip(q, values)}
    return out


def write_summaries(tables: dict[str, pd.DataFrame], outdir: str | Path) -> dict[str, Path]:
    outdir = Path(outdir)
    written = {}
    for name, df in tables.items():
        for ext in ("csv", "parquet"):
            path = outdir / f"{name}.{ext}"
            save_table(df, path)
            written[f"{name}.{ext}"] = path
    return written
