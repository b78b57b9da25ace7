"""Scores the way the Algonauts 2023 leaderboard computed them.

Per vertex: Pearson r between predicted and measured responses over images. With a noise
ceiling NC (as a fraction), the organisers' noise-normalised score is::

    r = max(r, 0);  NC[NC == 0] = 1e-14;  score = 100 * min(r**2 / NC, 1)

and the leaderboard's number is the mean of that over all vertices of all subjects and
hemispheres. Everything here is vectorised float64: 20,000 vertices in well under a second.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

NC_ZERO_REPLACEMENT = 1e-14


def pearson_columns(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column pair (images x vertices), float64; NaN where a column is constant."""
    a = np.asarray(y_true, dtype=np.float64)
    b = np.asarray(y_pred, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"responses {a.shape} and predictions {b.shape} differ in shape")
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    # A constant column has no correlation: decide that exactly, before the mean's rounding error
    # turns it into tiny nonzero deviations that would correlate with anything.
    constant = (a.max(axis=0) == a.min(axis=0)) | (b.max(axis=0) == b.min(axis=0))
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    # Scale each column to unit maximum so that tiny responses don't underflow when squared.
    with np.errstate(invalid="ignore", divide="ignore"):
        a = a / np.abs(a).max(axis=0)
        b = b / np.abs(b).max(axis=0)
        num = np.einsum("ij,ij->j", a, b)
        den = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
        r = num / den
    r[constant | (den == 0)] = np.nan
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
