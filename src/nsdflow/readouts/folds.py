"""The runs of a fit: which training images each model is fitted on and which images it predicts.

Without ``cv_folds`` a model is fitted twice (the scheme of every readout here):

* run ``val``: on the fit images of the subject's validation split, predicting the validation images;
* run ``test``: on every training image, predicting the test images.

With ``cv_folds: K`` (the trained readouts), the training images are cut into K folds *by NSD id*
(a shared image falls in the same fold for every subject, so that a model pretrained on all
subjects never saw the fold it predicts), and run ``k<i>`` is fitted on the other folds, predicting
fold i and the test images. Every training image then has an *out-of-fold* prediction
(``oof_pred``) from a model that never saw it; ``val_pred`` is the out-of-fold prediction of the
validation images and ``test_pred`` the mean of the K models' test predictions.

Ensembles weigh their members on the out-of-fold predictions of the fit images (never the
validation images), so that an ensemble's validation score is as honest as a model's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Run:
    """One model fit: trained on ``train`` (rows of the training images), predicting ``held_out``
    (rows of the training images: the validation images, or a fold) and, if ``test``, the test images."""

    name: str
    train: np.ndarray
    held_out: np.ndarray
    test: bool


def runs(split: dict, train_nsd_ids, cv_folds: int | None = None, seed: int = 0) -> list[Run]:
    """The runs of one subject's fit (see the module docstring)."""
    n = len(train_nsd_ids)
    if not cv_folds:
        return [Run("val", np.asarray(split["fit"], dtype=np.int64), np.asarray(split["val"], dtype=np.int64), False),
                Run("test", np.arange(n), np.empty(0, dtype=np.int64), True)]
    if cv_folds < 2 or cv_folds > n:
        raise ValueError(f"cv_folds must be between 2 and the {n} training images, got {cv_folds}")
    fold = fold_of(train_nsd_ids, cv_folds, seed)
    empty = sorted(set(range(cv_folds)) - set(fold.tolist()))
    if empty:
        raise ValueError(f"cv_folds {cv_folds}: folds {empty} hold none of the {n} training images; use fewer folds")
    return [Run(f"k{i}", np.flatnonzero(fold != i), np.flatnonzero(fold == i), True) for i in range(cv_folds)]


def fold_of(nsd_ids, k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each image, from its NSD id and ``seed`` alone (a hash), so that an
    image seen by several subjects is in the same fold for each of them. Fold sizes vary by chance
    (a binomial spread: 900 +- 28 images for 9,000 in 10 folds)."""
    ids = np.asarray(nsd_ids, dtype=np.int64)
    keys = np.array([int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "little") for i in ids],
                    dtype=np.uint64)
    return (keys % np.uint64(k)).astype(np.int64)


def assemble(runs_: list[Run], preds: dict[str, dict[str, np.ndarray]], split: dict, n_train: int) -> dict[str, np.ndarray]:
    """``val_pred``, ``test_pred`` and (with folds) ``oof_pred`` from each run's predictions.

    ``preds[run.name]``: ``{"held_out": (len(run.held_out), V), "test": (n_test, V)}``.
    """
    if [r.name for r in runs_] == ["val", "test"]:
        return {"val_pred": preds["val"]["held_out"], "test_pred": preds["test"]["test"]}
    first = preds[runs_[0].name]["test"]
    oof = np.full((n_train, first.shape[1]), np.nan, dtype=np.float32)
    test = np.zeros(first.shape, dtype=np.float64)
    for r in runs_:
        oof[r.held_out] = preds[r.name]["held_out"]
        test += preds[r.name]["test"]
    if np.isnan(oof).all(axis=1).any():
        raise ValueError("some training images are in no fold")
    return {"val_pred": oof[np.asarray(split["val"], dtype=np.int64)], "test_pred": (test / len(runs_)).astype(np.float32),
            "oof_pred": oof}
