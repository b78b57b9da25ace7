"""Merge a model's fits (regions, a hemisphere, or both hemispheres) into full-hemisphere predictions.

Every per-vertex array of the fits is merged: 2-D arrays (images x the fit's vertices: ``val_pred``,
``test_pred``, ``oof_pred``) and 1-D ones (one value per vertex: ridge's alphas, the Gaussian
readout's positions). Arrays that are not per vertex (attention maps) stay in the fit's file. A fit
of both hemispheres holds each one's arrays under ``lh.`` and ``rh.``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import load_npz, save_npz


def hemisphere_arrays(fit: dict[str, np.ndarray], hemi: str) -> dict[str, np.ndarray]:
    """A fit's arrays of one hemisphere (those under ``<hemi>.`` in a fit of both)."""
    prefix = f"{hemi}."
    if f"{prefix}vertices" in fit:
        return {k[len(prefix):]: v for k, v in fit.items() if k.startswith(prefix)}
    return fit


def merge_predictions(fit_paths: list[str | Path], n_vertices: int, out: str | Path, hemi: str | None = None) -> None:
    """Assemble a model's fits into full-hemisphere arrays in vertex order; every vertex exactly once."""
    cover = np.zeros(n_vertices, dtype=np.int64)
    merged: dict[str, np.ndarray] = {}
    for path in fit_paths:
        fit = hemisphere_arrays(load_npz(path), hemi) if hemi else load_npz(path)
        v = fit["vertices"]
        if v.size and (v.min() < 0 or v.max() >= n_vertices):
            raise ValueError(f"{path}: vertex indices outside 0..{n_vertices - 1}")
        cover[v] += 1
        for key, value in fit.items():
            if key == "vertices" or value.shape[-1:] != v.shape or value.ndim > 2 or value.dtype.kind not in "fiu" \
                    or key.startswith("attention"):
                continue  # not one number per vertex of this fit
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
