"""The seeded validation split of a subject's training images."""

from __future__ import annotations

import numpy as np


def make_split(n_train: int, fraction: float, seed: int, subject: str) -> dict[str, list[int]]:
    """Hold out ``round(fraction * n_train)`` training rows for validation, seeded per subject.

    Returns ``{"fit": rows, "val": rows}`` (ascending fMRI row indices).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split.val_fraction must be in (0, 1), got {fraction}")
    n_val = int(round(fraction * n_train))
    if n_val < 2 or n_train - n_val < 2:
        raise ValueError(f"a validation fraction of {fraction} leaves {n_val} of {n_train} images for validation; "
                         "both parts need at least 2")
    rng = np.random.default_rng([int(seed), int(subject.removeprefix("subj"))])
    val = np.sort(rng.choice(n_train, size=n_val, replace=False))
    fit = np.setdiff1d(np.arange(n_train), val)
    return {"fit": fit.tolist(), "val": val.tolist()}
