"""What the trained readouts share: their features as map sources, and their runs' predictions.

A trained readout's fit (:meth:`~nsdflow.readouts.params.Readout.fit`) sees the subject's images as
one list of rows, the training images first (in fMRI row order), then the test images, and each
run of :mod:`.folds` as rows of it: :func:`run_predictions` trains one model per run through the
readout's ``fit_run`` and assembles ``val_pred``, ``test_pred`` and, with folds, ``oof_pred``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import folds


def grid_sources(data, one: bool = False) -> list:
    """One :class:`~nsdflow.features.store.GridSource` per ``backbone/layer`` of the model, over the
    subject's training then test images. ``one``: the readout reads exactly one layer."""
    from ..features.store import FeatureStore, GridSource

    if one and len(data.features) != 1:
        raise ValueError(f"readout reads one grid layer; the model lists {len(data.features)}: "
                         f"{', '.join(data.features)}")
    ids = np.concatenate([data.summary["train_nsd_ids"], data.summary["test_nsd_ids"]])
    out = []
    for feature in data.features:
        backbone, _, layer = feature.partition("/")
        out.append(GridSource(FeatureStore(data.stores[backbone]), layer, ids))
    return out


def run_predictions(data, Y: np.ndarray, fit_run: Callable) -> dict[str, np.ndarray]:
    """Fit every run: ``fit_run(run, train_rows, Y[train_rows], pred_rows) -> (len(pred_rows), V)``,
    where ``pred_rows`` are the run's held-out training images, then (if it predicts them) every
    test image, as rows of the subject's image list."""
    n_train, n_test = data.n_train, len(data.summary["test_nsd_ids"])
    preds = {}
    for run in data.runs:
        pred_rows = np.concatenate([run.held_out, n_train + np.arange(n_test) if run.test else []]).astype(np.int64)
        pred = fit_run(run, run.train, Y[run.train], pred_rows)
        preds[run.name] = {"held_out": pred[:len(run.held_out)], "test": pred[len(run.held_out):]}
    return folds.assemble(data.runs, preds, data.split, n_train)
