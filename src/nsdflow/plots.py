"""Figures: per-ROI bars of median r, and a model comparison across regions (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path
from .layout import ROI_CLASSES


def _save(fig, out: str | Path) -> None:
    out = Path(out)
    for path in (out, out.with_suffix(".svg")):
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=path.suffix.lstrip("."))


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roi_bars(summary: pd.DataFrame, subject: str, hemi: str, out: str | Path, split: str = "val") -> None:
    """Median r per ROI (grouped by class) for each model: the challenge tutorial's figure."""
    plt = _mpl()
    df = summary[(summary["subject"] == subject) & (summary["hemi"] == hemi) & (summary["split"] == split)]
    df = df[~df["roi"].isin(["Unknown"])]
    rois = [("all", "all")] + [(c, r) for c in ROI_CLASSES for r in ROI_CLASSES[c] if c in set(df["roi_class"])]
    models = list(dict.fromkeys(df["model"]))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(rois) * max(1, len(models)) ** 0.5 + 2), 4))
    x = np.arange(len(rois))
    for i, model in enumerate(models):
        m = df[df["model"] == model].set_index(["roi_class", "roi"])
        vals = [m["median_r"].get((c, r), np.nan) for c, r in rois]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=model)
    ax.set_xticks(x, [r for _, r in rois], rotation=70, ha="right", fontsize=8)
    ax.set_ylabel(f"median Pearson r ({split})")
    ax.set_title(f"{subject} {hemi}: median r per ROI")
    ax.axhline(0, color="k", lw=0.5)
    # Class separators.
    pos, last = 0, None
    for i, (c, _) in enumerate(rois):
        if c != last and i > 0:
            ax.axvline(i - 0.5, color="0.7", lw=0.5)
        last = c
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def plot_model_comparison(summary: pd.DataFrame, out: str | Path, split: str = "val") -> None:
    """Mean noise-normalised score (or mean r without ceilings) per ROI, pooled over subjects, per model."""
    plt = _mpl()
    df = summary[(summary["subject"] == "all") & (summary["hemi"] == "all") & (summary["split"] == split)]
    df = df[(df["roi"] != "Unknown")]
    metric = "mean_score" if df["mean_score"].notna().any() else "mean_r"
    table = df.pivot_table(index=["roi_class", "roi"], columns="model", values=metric, sort=False)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(table) + 2), 4))
    for model in table.columns:
        ax.plot(np.arange(len(table)), table[model].to_numpy(), marker="o", ms=3, lw=1, label=model)
    ax.set_xticks(np.arange(len(table)), [r for _, r in table.index], rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("noise-normalised score (% of ceiling)" if metric == "mean_score" else "mean Pearson r")
    ax.set_title(f"models across regions, all subjects ({split})")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
