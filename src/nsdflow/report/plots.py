"""Figures from the summary table: per-ROI bars of median r, and a model comparison across regions.

Each figure is written as PNG (150 dpi) and SVG (text kept as text) beside it. Brain maps are in
:mod:`nsdflow.brainmap`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.layout import ROI_CLASSES, UNKNOWN
from ..io import atomic_path

#: Okabe & Ito's colour-blind-safe palette; models beyond it take tab20's colours.
MODEL_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
SPLIT_NAMES = {"val": "validation split", "test": "test split"}
HEMI_NAMES = {"lh": "left hemisphere", "rh": "right hemisphere", "all": "both hemispheres"}
CLASS_NAMES = {
    "all": "whole", "prf-visualrois": "retinotopic", "floc-bodies": "bodies", "floc-faces": "faces",
    "floc-places": "places", "floc-words": "words", "streams": "streams",
}


def _save(fig, out: str | Path) -> None:
    """Write ``fig`` as ``out`` (PNG) and the SVG beside it, each atomically."""
    out = Path(out)
    for path in (out, out.with_suffix(".svg")):
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=path.suffix.lstrip("."),
                        metadata={"Date": None} if path.suffix == ".svg" else None)


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False})
    return plt


def model_colours(models: list[str]) -> dict[str, str]:
    """A fixed colour per model, in the order given."""
    import matplotlib

    extra = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20"].colors]
    palette = list(MODEL_COLOURS) + extra
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def _roi_axis(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(class, roi) pairs to draw: the whole hemisphere, then every ROI of each class present."""
    classes = [c for c in ROI_CLASSES if c in set(df["roi_class"])]
    return [("all", "all")] + [(c, r) for c in classes for r in ROI_CLASSES[c]]


def plot_roi_bars(summary: pd.DataFrame, subject: str, hemi: str, out: str | Path, split: str = "val") -> None:
    """Median r per ROI of one subject and hemisphere, one bar per model, with interquartile ranges.

    The figure of the challenge's tutorial, grouped by ROI class; a missing bar is marked
    "absent" (the ROI has no vertex in this hemisphere).
    """
    plt = _mpl()
    df = summary[(summary["subject"] == subject) & (summary["hemi"] == hemi) & (summary["split"] == split)]
    if df.empty:
        raise ValueError(f"the summary has no rows for {subject} {hemi} on the {split} split")
    df = df[df["roi"] != UNKNOWN]
    rois = _roi_axis(df)
    models = list(dict.fromkeys(df["model"]))
    colours = model_colours(models)
    width = 0.8 / len(models)
    x = np.arange(len(rois))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.16 * len(rois) * (len(models) + 1) + 1.5), 4.4))
    # Alternate a light band behind every other class, and name each class under its ROIs.
    classes = list(dict.fromkeys(c for c, _ in rois))
    for k, cls in enumerate(classes):
        members = [i for i, (c, _) in enumerate(rois) if c == cls]
        lo, hi = members[0] - 0.5, members[-1] + 0.5
        if k % 2:
            ax.axvspan(lo, hi, color="0.95", zorder=0, lw=0)
        ax.text((lo + hi) / 2, -0.3, CLASS_NAMES.get(cls, cls), transform=ax.get_xaxis_transform(), ha="center",
                va="top", fontsize=8, color="0.3")
    lowest = 0.0
    for i, model in enumerate(models):
        m = df[df["model"] == model].set_index(["roi_class", "roi"])
        get = lambda col: np.array([m[col].get(k, np.nan) for k in rois], dtype=float)  # noqa: E731
        med, q25, q75 = get("median_r"), get("q25_r") if "q25_r" in m else None, get("q75_r") if "q75_r" in m else None
        pos = x + (i - (len(models) - 1) / 2) * width
        ax.bar(pos, med, width * 0.92, color=colours[model], label=model, zorder=2)
        if q25 is not None and q75 is not None:
            ax.vlines(pos, q25, q75, color="0.15", lw=0.7, zorder=3)
            lowest = min(lowest, np.nanmin(q25) if np.isfinite(q25).any() else 0.0)
    absent = [i for i, k in enumerate(rois) if df[(df["roi_class"] == k[0]) & (df["roi"] == k[1])]["n_vertices"].sum() == 0]
    for i in absent:
        ax.text(i, 0.0, " absent", rotation=90, ha="center", va="bottom", fontsize=7, color="0.5")
    ax.axhline(0, color="0.2", lw=0.6, zorder=2)
    ax.set_xticks(x, [r for _, r in rois], rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.6, len(rois) - 0.4)
    ax.set_ylim(bottom=min(0.0, lowest * 1.1))
    ax.set_ylabel(f"median Pearson r ({SPLIT_NAMES.get(split, split)})")
    ax.grid(axis="y", color="0.88", lw=0.6, zorder=1)
    ax.set_title(f"{subject}, {HEMI_NAMES.get(hemi, hemi)}: median r per ROI (bars) and interquartile range "
                 "(lines)", fontsize=11, loc="left")
    ax.legend(ncols=min(len(models), 4), fontsize=8, frameon=False, loc="lower right", bbox_to_anchor=(1, 1.0))
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def plot_model_comparison(summary: pd.DataFrame, out: str | Path, split: str = "val") -> None:
    """Each model's mean score per ROI, pooled over every subject and hemisphere, as an annotated heatmap.

    The organisers' noise-normalised score (percent of the noise ceiling) where noise ceilings
    are known, mean Pearson r otherwise. The first row is the whole cortex (the leaderboard's
    number); the best model of each row is in bold; ROIs absent everywhere are grey.
    """
    plt = _mpl()
    df = summary[(summary["subject"] == "all") & (summary["hemi"] == "all") & (summary["split"] == split)]
    if df.empty:
        raise ValueError(f"the summary has no pooled rows for the {split} split")
    df = df[df["roi"] != UNKNOWN]
    metric = "mean_score" if df["mean_score"].notna().any() else "mean_r"
    label = "noise-normalised score (% of noise ceiling)" if metric == "mean_score" else "mean Pearson r"
    rois = _roi_axis(df)
    models = list(dict.fromkeys(df["model"]))
    table = df.set_index(["roi_class", "roi", "model"])[metric]
    values = np.array([[table.get((c, r, m), np.nan) for m in models] for c, r in rois], dtype=float)
    fig_h = 0.24 * len(rois) + 2.4
    fig, ax = plt.subplots(figsize=(2.8 + 1.15 * len(models), fig_h))
    finite = values[np.isfinite(values)]
    vmax = float(finite.max()) if finite.size else 1.0
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.88")
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=0, vmax=vmax)
    best = np.nanargmax(np.where(np.isfinite(values), values, -np.inf), axis=1)
    for i in range(len(rois)):
        for j in range(len(models)):
            v = values[i, j]
            text = "absent" if not np.isfinite(v) else (f"{v:.1f}" if metric == "mean_score" else f"{v:.3f}")
            light = np.isfinite(v) and v < 0.6 * vmax
            ax.text(j, i, text, ha="center", va="center", fontsize=7.5,
                    color="0.4" if not np.isfinite(v) else ("white" if light else "black"),
                    fontweight="bold" if np.isfinite(v) and j == best[i] and len(models) > 1 else "normal")
    ax.set_yticks(np.arange(len(rois)), ["whole cortex" if r == "all" else r for _, r in rois], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xticks(np.arange(len(models)), models, rotation=30, ha="left", rotation_mode="anchor", fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    # Class separators and names on the right.
    classes = list(dict.fromkeys(c for c, _ in rois))
    for cls in classes:
        members = [i for i, (c, _) in enumerate(rois) if c == cls]
        ax.axhline(members[0] - 0.5, color="white", lw=2)
        ax.text(len(models) - 0.4, (members[0] + members[-1]) / 2, CLASS_NAMES.get(cls, cls), va="center",
                ha="left", fontsize=8, color="0.3")
    bar = fig.colorbar(image, ax=ax, orientation="horizontal", fraction=0.6 / fig_h, pad=0.3 / fig_h, aspect=25)
    bar.set_label(label, fontsize=8)
    ax.set_title(f"models across regions: {SPLIT_NAMES.get(split, split)},\nall subjects and hemispheres pooled",
                 fontsize=10, pad=12 + 5.5 * max(len(m) for m in models) * 0.5)
    if metric == "mean_score" and df["chance_score"].notna().any():
        chance = df[df["roi"] == "all"].set_index("model")["chance_score"]
        text = ", ".join(f"{m} {chance.get(m, np.nan):.1f}" for m in models)
        fig.text(0.01, 0.0, f"chance level, whole cortex (predictions shuffled across images): {text}",
                 fontsize=7, color="0.35", ha="left", va="top", wrap=True)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
