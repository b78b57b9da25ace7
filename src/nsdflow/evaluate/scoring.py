"""Scores the way the Algonauts 2023 leaderboard computed them.

Per vertex: Pearson r between predicted and measured responses over images. With a noise
ceiling NC (as a fraction), the organisers' noise-normalised score is::

    r = max(r, 0);  NC[NC == 0] = 1e-14;  score = 100 * min(r**2 / NC, 1)

and the leaderboard's number is the mean of that over all vertices of all subjects and
hemispheres. Everything here is vectorised float64: 20,000 vertices in well under a second.

One deliberate difference: where a prediction (or a response) is constant over the images, r
is undefined. The organisers' loop over ``scipy.stats.pearsonr`` gives NaN there, which makes
their mean NaN; here such a vertex counts as r = 0 and score 0, and the scoring job warns.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

NC_ZERO_REPLACEMENT = 1e-14


def pearson_columns(y_true: np.ndarray, y_pred: np.ndarray, block_bytes: int = 16 * 2**20) -> np.ndarray:
    """Pearson r of each column pair (images x vertices), float64; NaN where a column is constant.

    Columns are centred and correlated in float64, a block of columns at a time (about
    ``block_bytes`` per array), so memory stays bounded and the work stays in cache: 20,544
    vertices x 159 test images take about 20 ms, x 1,968 validation images about half a second.
    Each column is computed on its own; the block size moves results by a few units in the
    last place at most (SIMD summation order), far below any digit a score is reported to.

    A column is constant when its values are all equal, decided exactly before centring (the
    mean's rounding error would otherwise leave tiny deviations that correlate with anything);
    centred columns are scaled to unit maximum so that tiny responses don't underflow when squared.
    """
    a_all = np.asarray(y_true)
    b_all = np.asarray(y_pred)
    if a_all.shape != b_all.shape:
        raise ValueError(f"responses {a_all.shape} and predictions {b_all.shape} differ in shape")
    if a_all.ndim == 1:
        a_all, b_all = a_all[:, None], b_all[:, None]
    n, v = a_all.shape
    block = int(np.clip(block_bytes // (8 * max(n, 1)), 64, max(v, 64)))
    r = np.empty(v, dtype=np.float64)
    for start in range(0, v, block):
        cols = slice(start, start + block)
        a = np.array(a_all[:, cols], dtype=np.float64)
        b = np.array(b_all[:, cols], dtype=np.float64)
        constant = (a.max(axis=0) == a.min(axis=0)) | (b.max(axis=0) == b.min(axis=0))
        a -= a.mean(axis=0)
        b -= b.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            a /= np.abs(a).max(axis=0)
            b /= np.abs(b).max(axis=0)
            num = np.einsum("ij,ij->j", a, b)
            den = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
            r[cols] = np.where(constant | (den == 0), np.nan, num / den)
    return np.clip(r, -1.0, 1.0)


def noise_ceiling_fraction(nc: np.ndarray, name: str = "noise ceiling") -> tuple[np.ndarray, str]:
    """Noise ceilings as fractions: releases give them in percent or in fractions.

    A ceiling above 1 can only be a percentage, so the unit is read off the values; the
    decision is logged. Returns ``(nc_fraction, unit)`` with unit ``"percent"`` or ``"fraction"``.
    """
    nc = np.asarray(nc, dtype=np.float64)
    if not np.isfinite(nc).all():
        raise ValueError(f"{name}: {int((~np.isfinite(nc)).sum())} values are NaN or inf")
    if (nc < 0).any():
        raise ValueError(f"{name}: {int((nc < 0).sum())} values are negative")
    if nc.max(initial=0.0) > 1.0:
        if nc.max() > 100.0:
            raise ValueError(f"{name}: values up to {nc.max():.3g} are neither fractions nor percent")
        log.info("%s: values up to %.3g, read as percent", name, nc.max())
        return nc / 100.0, "percent"
    log.info("%s: values up to %.3g, read as fractions", name, nc.max(initial=0.0))
    return nc, "fraction"


def noise_normalized_score(r: np.ndarray, nc_fraction: np.ndarray) -> np.ndarray:
    """The organisers' per-vertex score in percent of the noise ceiling, in [0, 100].

    NaN correlations (constant predictions) count as 0.
    """
    r = np.nan_to_num(np.asarray(r, dtype=np.float64), nan=0.0)
    r2 = np.maximum(r, 0.0) ** 2
    nc = np.array(nc_fraction, dtype=np.float64)
    nc[nc == 0] = NC_ZERO_REPLACEMENT
    with np.errstate(over="ignore"):  # a ceiling of ~1e-300 overflows r^2/NC to inf: clipped to 100 below
        return 100.0 * np.minimum(r2 / nc, 1.0)


def challenge_score(r_list, nc_list) -> float:
    """The leaderboard number: mean noise-normalised score over all vertices of all hemispheres."""
    scores = [noise_normalized_score(r, nc) for r, nc in zip(r_list, nc_list)]
    return float(np.concatenate(scores).mean())


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


def score_arrays(y_true: np.ndarray, y_pred: np.ndarray, noise_ceiling: np.ndarray | None = None,
                 per_vertex: str | None = None) -> dict:
    """``nsdflow score``: Pearson r of every vertex and, with noise ceilings, the challenge score.

    Returns a JSON-able dict: ``n_images``, ``n_vertices``, ``mean_r``, ``median_r``,
    ``n_constant`` (vertices whose r is undefined, counted as 0) and, with ``noise_ceiling``,
    ``noise_ceiling_unit`` and ``score``. ``per_vertex``: also save per-vertex r there (.npy).
    """
    r = pearson_columns(y_true, y_pred)
    out = {"n_images": int(np.asarray(y_true).shape[0]), "n_vertices": int(r.size),
           "mean_r": float(np.nan_to_num(r).mean()), "median_r": float(np.median(np.nan_to_num(r))),
           "n_constant": int(np.isnan(r).sum())}
    if noise_ceiling is not None:
        nc, unit = noise_ceiling_fraction(noise_ceiling)
        if nc.shape != r.shape:
            raise ValueError(f"{nc.size} noise ceilings for {r.size} vertices")
        out["noise_ceiling_unit"] = unit
        out["score"] = float(noise_normalized_score(r, nc).mean())
    if per_vertex:
        from ..io import save_npy

        save_npy(per_vertex, r)
    return out
