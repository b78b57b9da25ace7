"""Summarise per-vertex scores into the leaderboard's tables.

Tables are tidy (one row per model, split, subject, hemisphere, ROI) and written as CSV and
Parquet, so that ``pd.read_csv("results/scores/summary.csv")`` is all a researcher needs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.layout import ROI_CLASSES, UNKNOWN
from ..io import save_table

log = logging.getLogger(__name__)

SPLIT_LABELS = {"val": "validation (held-out training images)", "test": "test (withheld responses)"}



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


LEADERBOARD_NOTE = ("challenge_score: mean over all vertices of all subjects and hemispheres of "
                    "100*min(max(r,0)^2/NC, 1)")


def summarize_files(vertex_tables: dict[tuple[str, str, str], str | Path], classes: list[str] | None,
                    outdir: str | Path) -> dict[str, pd.DataFrame]:
    """Summarise per-vertex tables keyed by (model, subject, hemi) into ``outdir``.

    Writes every table of :func:`summarize` as CSV and Parquet, and ``scores.json`` (the
    leaderboard, the percentiles of r that the brain maps take their colour scale from).
    """
    from ..io import atomic_write_json

    vertices = load_vertex_tables(vertex_tables)
    tables = summarize(vertices, classes)
    write_summaries(tables, outdir)
    atomic_write_json(Path(outdir) / "scores.json", {
        "leaderboard": tables["leaderboard"].to_dict(orient="records"),
        "r_percentiles": r_percentiles(vertices),
        "note": LEADERBOARD_NOTE,
    })
    return tables


def leaderboard_lines(board: pd.DataFrame) -> list[str]:
    """One line per model and split: mean and median r, and the challenge score against chance."""
    lines = []
    for _, row in board.iterrows():
        score = "" if pd.isna(row["challenge_score"]) else (
            f", challenge score {row['challenge_score']:.2f} (chance {row['chance_score']:.2f})")
        lines.append(f"{row['model']} [{row['split']}]: mean r {row['mean_r']:.4f}, "
                     f"median r {row['median_r']:.4f}{score}")
    return lines
