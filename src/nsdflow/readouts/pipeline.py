"""The readout stage's two steps as the workflow runs them: the design, then one region's fit."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_fmri
from ..io import read_json, save_npz
from ..regions import load_region_labels, region_vertices
from . import get_readout

log = logging.getLogger(__name__)
FOLDS = ("val", "test")  # val: fit on the fit rows, predict the held-out rows; test: fit on all, predict test


def load_features(features: list[str], stores: dict[str, str | Path], nsd_ids) -> np.ndarray:
    """Concatenate feature sets ``backbone/layer`` for the given images (n, sum of D), float32."""
    from ..features.store import FeatureStore  # zarr: imported only where features are read

    blocks = []
    opened: dict[str, FeatureStore] = {}
    for feature in features:
        backbone, _, layer = feature.partition("/")
        if backbone not in stores:
            raise KeyError(f"feature {feature!r}: backbone {backbone!r} is not configured")
        store = opened.setdefault(backbone, FeatureStore(stores[backbone]))
        blocks.append(store.read(layer, nsd_ids))
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


def build_design(
    features: list[str],
    readout: str,
    params: dict[str, Any],
    summary_path: str | Path,
    split_path: str | Path,
    stores: dict[str, str | Path],
    out: str | Path,
) -> None:
    """Compute a readout's prepared arrays for both folds of one subject; write them to ``out`` (npz)."""
    t0 = time.time()
    summary, split = read_json(summary_path), read_json(split_path)
    X_train = load_features(features, stores, summary["train_nsd_ids"])
    X_test = load_features(features, stores, summary["test_nsd_ids"])
    fit_rows, val_rows = np.asarray(split["fit"]), np.asarray(split["val"])
    r = get_readout(readout)
    arrays: dict[str, np.ndarray] = {"fit_rows": fit_rows, "val_rows": val_rows, "n_test": np.array(len(X_test))}
    for fold, (X_fit, X_pred) in zip(FOLDS, ((X_train[fit_rows], X_train[val_rows]), (X_train, X_test))):
        for key, value in r.prepare(X_fit, X_pred, params).items():
            arrays[f"{fold}.{key}"] = value
    save_npz(out, **arrays)
    log.info("design %s: %d features, %d train / %d test images, %.1f s", out, X_train.shape[1], len(X_train),
             len(X_test), time.time() - t0)


def fit_region(
    readout: str,
    params: dict[str, Any],
    design_path: str | Path,
    data_root: str | Path,
    subject: str,
    hemi: str,
    regions_path: str | Path,
    region: str,
    out: str | Path,
) -> dict[str, Any]:
    """Fit one region of one hemisphere for both folds; write predictions and per-vertex info (npz)."""
    t0 = time.time()
    vertices = region_vertices(load_region_labels(regions_path), region)
    r = get_readout(readout)
    with np.load(design_path) as design:
        fit_rows = design["fit_rows"]
        arrays: dict[str, np.ndarray] = {"vertices": vertices}
        if vertices.size == 0:
            arrays["val_pred"] = np.zeros((len(design["val_rows"]), 0), np.float32)
            arrays["test_pred"] = np.zeros((int(design["n_test"]), 0), np.float32)
            save_npz(out, **arrays)
            log.info("%s %s %s: region absent here, nothing to fit", subject, hemi, region)
            return {"n_vertices": 0}
        Y = np.ascontiguousarray(load_fmri(data_root, subject, hemi)[:, vertices], dtype=np.float32)
        for fold, Y_fit in zip(FOLDS, (Y[fit_rows], Y)):
            prepared = {k.split(".", 1)[1]: design[k] for k in design.files if k.startswith(fold + ".")}
            pred, info = r.fit_predict(prepared, Y_fit, params)
            arrays[f"{fold}_pred"] = pred
            for key, value in info.items():
                arrays[f"{fold}.{key}"] = value
    save_npz(out, **arrays)
    log.info("%s %s %s: %d vertices fitted in %.2f s", subject, hemi, region, vertices.size, time.time() - t0)
    return {"n_vertices": int(vertices.size)}
