"""Where a transformer readout's queries look: attention maps over test images, and their centres.

A ``transformer`` fit with ROI queries keeps the last decoder layer's cross-attention of every
query (averaged over heads) on the first few test images (``attention``: (images, queries, H, W),
each map summing to 1; ``attention_queries``: ``"lh:V1v"``...; ``attention_images``: the test
images' positions in the subject's test split). This module turns that into

- a table, one row per hemisphere x query: the centre of mass of its mean map (``x``, ``y`` in
  image half-widths, +x right, +y down, the convention of the demo's hidden receptive fields),
  its spread (root mean square distance from that centre) and the share of attention on its
  most attended cell, and
- a figure: a column per query, a row per hemisphere x test image (the first four, then the mean
  over all kept images), the map over the (greyed) image, the centre marked.

Grid cell ``j`` of ``W`` covers the image's half-width coordinates around ``(2j + 1) / W - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.layout import HEMISPHERES
from .plots import _mpl, _save


#: Test images drawn one by one in the figure (the mean row and the table use every kept image).
FIGURE_IMAGES = 4


def cell_centres(n: int) -> np.ndarray:
    """The centres of ``n`` equal cells across [-1, 1]."""
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def attention_centres(maps: np.ndarray) -> np.ndarray:
    """Centre of mass ``(x, y)`` of each map (..., H, W) in image half-widths (maps need not be normalised)."""
    maps = np.asarray(maps, dtype=np.float64)
    mass = maps.sum(axis=(-2, -1))
    mass = np.where(mass > 0, mass, 1.0)
    ys, xs = cell_centres(maps.shape[-2]), cell_centres(maps.shape[-1])
    x = (maps.sum(axis=-2) * xs).sum(axis=-1) / mass
    y = (maps.sum(axis=-1) * ys).sum(axis=-1) / mass
    return np.stack([x, y], axis=-1)


def hemisphere_attention(fit: dict[str, np.ndarray], hemi: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(maps (images, queries, H, W), query names without the hemisphere, test positions)`` of one
    hemisphere in a fit's arrays (as :func:`nsdflow.io.load_npz` returns them)."""
    key = f"{hemi}.attention"
    if key not in fit:
        raise ValueError(f"no attention maps for {hemi} in this fit (a transformer readout with ROI queries "
                         "keeps them; vertex queries do not)")
    maps = np.asarray(fit[key], dtype=np.float32)
    names = [str(q).split(":", 1)[-1] for q in fit[f"{hemi}.attention_queries"]]
    images = np.asarray(fit[f"{hemi}.attention_images"], dtype=np.int64)
    if maps.ndim != 4 or maps.shape[:2] != (len(images), len(names)):
        raise ValueError(f"{hemi}: attention maps of shape {maps.shape} do not match {len(images)} images x "
                         f"{len(names)} queries")
    return maps, names, images


def attention_table(fit: dict[str, np.ndarray], hemis: Sequence[str] = HEMISPHERES) -> pd.DataFrame:
    """One row per hemisphere x query: ``hemi, query, x, y, spread, peak, images`` of the query's mean map."""
    rows = []
    for h in hemis:
        maps, names, images = hemisphere_attention(fit, h)
        mean = maps.mean(axis=0)  # (Q, H, W)
        centres = attention_centres(mean)
        ys, xs = np.meshgrid(cell_centres(mean.shape[1]), cell_centres(mean.shape[2]), indexing="ij")
        for q, name in enumerate(names):
            w = mean[q] / max(float(mean[q].sum()), 1e-12)
            spread = float(np.sqrt((w * ((xs - centres[q, 0]) ** 2 + (ys - centres[q, 1]) ** 2)).sum()))
            rows.append({"hemi": h, "query": name, "x": float(centres[q, 0]), "y": float(centres[q, 1]),
                         "spread": spread, "peak": float(w.max()), "images": len(images)})
    return pd.DataFrame(rows, columns=["hemi", "query", "x", "y", "spread", "peak", "images"])


def attention_figure(fit: dict[str, np.ndarray], images: dict[int, np.ndarray], out: str | Path, title: str,
                     hemis: Sequence[str] = HEMISPHERES) -> pd.DataFrame:
    """Draw the attention maps of ``fit`` (see the module docstring) and write ``out`` (PNG, SVG beside).

    ``images`` maps a test position to its pixels (H, W, 3) uint8; a position without pixels is
    drawn on grey. Returns :func:`attention_table`.
    """
    plt = _mpl()
    table = attention_table(fit, hemis)
    per_hemi = {h: hemisphere_attention(fit, h) for h in hemis}
    # A column per query name of either hemisphere (an ROI absent from one hemisphere has no query there)
    names = list(dict.fromkeys(n for h in hemis for n in per_hemi[h][1]))
    # the first FIGURE_IMAGES images of each hemisphere, then (-1) the mean over all kept images
    rows = [(h, i) for h in hemis for i in [*range(min(FIGURE_IMAGES, len(per_hemi[h][2]))), -1]]
    vmax = max(float(m.max()) for m, _, _ in per_hemi.values()) or 1.0
    fig, axes = plt.subplots(len(rows), len(names), figsize=(1.35 * len(names) + 0.6, 1.35 * len(rows) + 0.6),
                             squeeze=False)
    for r, (h, i) in enumerate(rows):
        maps, qnames, positions = per_hemi[h]
        pixels = images.get(int(positions[i])) if i >= 0 else None
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{h}\n{f'mean of {len(positions)}' if i < 0 else f'test {positions[i]}'}", fontsize=8)
            if name not in qnames:
                continue  # no such query in this hemisphere: an empty cell
            q = qnames.index(name)
            extent = (-1, 1, 1, -1)  # x right, y down, as the image
            if pixels is not None:
                ax.imshow(pixels.mean(axis=2), cmap="gray", extent=extent, vmin=0, vmax=255)
            else:
                ax.imshow(np.full((2, 2), 0.5), cmap="gray", extent=extent, vmin=0, vmax=1)
            m = maps[i, q] if i >= 0 else maps[:, q].mean(axis=0)
            ax.imshow(m, cmap="inferno", extent=extent, vmin=0, vmax=vmax, alpha=0.7, interpolation="nearest")
            cx, cy = attention_centres(m)
            ax.plot([cx], [cy], marker="+", color="#56B4E9", markersize=9, markeredgewidth=2)
            ax.set_xlim(-1, 1)
            ax.set_ylim(1, -1)
    fig.suptitle(f"{title}: each query's cross-attention (heads averaged; + its centre)", fontsize=10)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return table


def test_images(root: str | Path, subject: str, positions) -> dict[int, np.ndarray]:
    """The pixels of a subject's test images at ``positions`` of its test split (fMRI row order),
    decoded with the data stage's checks (PNG content, size limit)."""
    from ..data.layout import SubjectPaths
    from ..data.read import list_images
    from ..features.images import decode_image

    names = list_images(root, subject, "test")
    folder = SubjectPaths(root, subject).images_dir("test")
    return {int(i): decode_image(folder / names[int(i)].filename) for i in positions if 0 <= int(i) < len(names)}
