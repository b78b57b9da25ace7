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
    out = {
        "n_vertices": int(len(frame)),
        "mean_r": float(r0.mean()) if len(r) else np.nan,
        "median_r": float(np.median(r0)) if len(r) else np.nan,
    }
    col = f"score_{split}"
    out["mean_score"] = float(frame[col].mean()) if col in frame and len(frame) else np.nan
    col = f"chance_{split}"
    out["chance_score"] = float(frame[col].mean()) if col in frame and len(frame) else np.nan
    out["mean_nc"] = float(frame["nc"].mean() * 100) if "nc" in frame and len(frame) else np.nan
    return out


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
        all subjects and hemispheres, and mean and median r.
    """
    classes = [c for c in ROI_CLASSES if c in vertices.columns] if roi_classes is None else roi_classes
    splits = [s for s in ("val", "test") if f"r_{s}" in vertices.columns and vertices[f"r_{s}"].notna().any()]
    rows, board = [], []
    for model, by_model in vertices.groupby("model", sort=False):
        for split in splits:
            board.append({"model": model, "split": split, **_stats(by_model, split)})
            scopes = [("all", "all", by_model)]
            for subject, frame in by_model.groupby("subject"):
                scopes.append((subject, "all", frame))
                for hemi, f2 in frame.groupby("hemi"):
                    scopes.append((subject, hemi, f2))
            for hemi, frame in by_model.groupby("hemi"):
                scopes.append(("all", hemi, frame))
            for subject, hemi, frame in scopes:
                rows.append({"model": model, "split": split, "subject": subject, "hemi": hemi,
                             "roi_class": "all", "roi": "all", **_stats(frame, split)})
                for cls in classes:
                    for roi in ROI_CLASSES[cls]:
                        sel = frame[frame[cls] == roi] if cls in frame else frame.iloc[:0]
                        rows.append({"model": model, "split": split, "subject": subject, "hemi": hemi,
                                     "roi_class": cls, "roi": roi, **_stats(sel, split)})
                    sel = frame[frame[cls] == UNKNOWN] if cls in frame else frame.iloc[:0]
                    rows.append({"model": model, "split": split, "subject": subject, "hemi": hemi,
                                 "roi_class": cls, "roi": UNKNOWN, **_stats(sel, split)})
    summary = pd.DataFrame(rows)
    leaderboard = pd.DataFrame(board).rename(columns={"mean_score": "challenge_score"})
    return {"summary": summary, "leaderboard": leaderboard}


def write_summaries(tables: dict[str, pd.DataFrame], outdir: str | Path) -> dict[str, Path]:
    outdir = Path(outdir)
    written = {}
    for name, df in tables.items():
        for ext in ("csv", "parquet"):
            path = outdir / f"{name}.{ext}"
            save_table(df, path)
            written[f"{name}.{ext}"] = path
    return written
