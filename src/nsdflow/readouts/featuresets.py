"""Feature sets: the inputs of a model, built once per subject and shared by every model that uses them.

A feature set is one or more stored layers (``backbone/layer``), concatenated, each column
standardised on the fit images (unless ``standardize`` is false), optionally reduced by PCA
fitted on the fit images only. Its canonical spec::

    {"features": ["alexnet/features.2"], "standardize": false,
     "pca": {"n_components": 100, "batch_size": 300}}        # or "pca": null

gives it a stable id (:func:`featureset_id`): a readable name, e.g.
``alexnet.features.2-raw-pca100b300``, shortened with a hash of the spec when long. Two models
with the same spec share the same PCA and designs.

Everything is computed for the two folds of a subject: ``val`` (fit images -> validation
images) and ``test`` (all training images -> test images); statistics (means, scales, PCA)
always come from the fold's fit rows only.

The PCA streams the Zarr features in batches (:func:`fit_pca`), like the devkit's
``IncrementalPCA.partial_fit`` loop, so that a layer larger than memory (AlexNet ``features.2``
in full: 46,656 values per image, 1.8 GB for 9,841 images in float32) is reduced out of core.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..io import read_json, save_npz
from .ridge import standardize_fit

log = logging.getLogger(__name__)
FOLDS = ("val", "test")  # val: fit on the fit rows, predict the held-out rows; test: fit on all, predict test
_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def featureset_spec(features: list[str], standardize: bool, pca: dict[str, Any] | None) -> dict[str, Any]:
    """The canonical spec of a feature set (see the module docstring)."""
    spec_pca = None
    if pca:
        spec_pca = {"n_components": int(pca.get("n_components", 100)), "batch_size": int(pca.get("batch_size", 300))}
    return {"features": list(features), "standardize": bool(standardize), "pca": spec_pca}


def featureset_id(spec: dict[str, Any], max_len: int = 80) -> str:
    """A stable, readable id: features joined by ``+`` (``/`` -> ``.``), ``-raw`` when not
    standardised, ``-pca<n>b<batch>``; longer than ``max_len``: cut, plus 8 hex of the spec's hash."""
    name = "+".join(f.replace("/", ".") for f in spec["features"])
    if not spec["standardize"]:
        name += "-raw"
    if spec.get("pca"):
        name += f"-pca{spec['pca']['n_components']}b{spec['pca']['batch_size']}"
    name = _SAFE.sub("_", name)
    if len(name) > max_len:
        import json

        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        name = name[: max_len - 9] + "-" + digest
    return name


def backbones_of(spec: dict[str, Any]) -> list[str]:
    return sorted({f.split("/", 1)[0] for f in spec["features"]})


# ----------------------------------------------------------------------------- reading features


class FeatureReader:
    """Reads a feature set's raw (concatenated, not standardised) rows for given NSD ids."""

    def __init__(self, features: list[str], stores: dict[str, str | Path]):
        from ..features.store import (
            FeatureStore,  # zarr: imported only where features are read
        )

        self.features = list(features)
        self._stores: dict[str, Any] = {}
        for feature in self.features:
            backbone, _, layer = feature.partition("/")
            if backbone not in stores:
                raise KeyError(f"feature {feature!r}: no store given for backbone {backbone!r} "
                               f"(given: {', '.join(stores) or 'none'})")
            if backbone not in self._stores:
                self._stores[backbone] = FeatureStore(stores[backbone])

    def read(self, nsd_ids) -> np.ndarray:
        blocks = []
        for feature in self.features:
            backbone, _, layer = feature.partition("/")
            blocks.append(self._stores[backbone].read(layer, nsd_ids))
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

    def batches(self, nsd_ids, rows: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(rows, X)`` for consecutive batches of ``rows`` (indices into ``nsd_ids``), in order."""
        nsd_ids = np.asarray(nsd_ids)
        for b in batch_bounds(len(rows), batch_size):
            r = rows[b]
            yield r, self.read(nsd_ids[r])


def batch_bounds(n: int, batch_size: int, min_last: int = 1) -> list[slice]:
    """Consecutive slices of ``batch_size``; a last batch shorter than ``min_last`` joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_last:
        starts.pop()
    ends = starts[1:] + [n]
    return [slice(s, e) for s, e in zip(starts, ends)]


def fold_rows(split: dict, n_train: int) -> dict[str, np.ndarray]:
    """The training rows each fold fits on."""
    return {"val": np.asarray(split["fit"], dtype=np.int64), "test": np.arange(n_train)}


# ----------------------------------------------------------------------------- without PCA


def load_folds(spec: dict[str, Any], summary: dict, split: dict, stores: dict[str, str | Path]) -> dict[str, tuple]:
    """``{fold: (X_fit, X_pred)}`` of a feature set without PCA, standardised per fold if asked."""
    reader = FeatureReader(spec["features"], stores)
    X_train = reader.read(summary["train_nsd_ids"])
    X_test = reader.read(summary["test_nsd_ids"])
    fit_rows, val_rows = np.asarray(split["fit"]), np.asarray(split["val"])
    out = {}
    for fold, (X_fit, X_pred) in zip(FOLDS, ((X_train[fit_rows], X_train[val_rows]), (X_train, X_test))):
        if spec["standardize"]:
            mean, scale = standardize_fit(X_fit)
            X_fit, X_pred = (X_fit - mean) / scale, (X_pred - mean) / scale
        out[fold] = (np.ascontiguousarray(X_fit, np.float32), np.ascontiguousarray(X_pred, np.float32))
    return out


# ----------------------------------------------------------------------------- PCA


def _streamed_stats(reader: FeatureReader, nsd_ids, rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales over ``rows``, one batch in memory at a time (float64 sums)."""
    total = sq = None
    for _, X in reader.batches(nsd_ids, rows, batch_size):
        X = X.astype(np.float64)
        total = X.sum(axis=0) if total is None else total + X.sum(axis=0)
        sq = (X * X).sum(axis=0) if sq is None else sq + (X * X).sum(axis=0)
    n = len(rows)
    mean = total / n
    var = np.maximum(sq / n - mean * mean, 0.0)
    scale = np.sqrt(var)
    scale[scale < 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0)))] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def fit_pca(
    spec: dict[str, Any],
    summary: dict,
    split: dict,
    stores: dict[str, str | Path],
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Reduce a feature set by PCA fitted on each fold's fit rows, streaming the features.

    Per fold: (if ``standardize``) one pass for the column means and scales; one pass of
    ``IncrementalPCA(n_components).partial_fit`` over consecutive batches of ``batch_size`` fit
    rows, in row order (a last batch smaller than ``n_components`` joins the one before, as
    partial_fit requires); then one pass transforming every training and test row.

    Returns ``{"<fold>.X_fit", "<fold>.X_pred", "<fold>.explained_variance_ratio"}`` (float32).
    """
    from sklearn.decomposition import IncrementalPCA
    from tqdm import tqdm

    t0 = time.time()
    n_components, batch_size = spec["pca"]["n_components"], spec["pca"]["batch_size"]
    reader = FeatureReader(spec["features"], stores)
    train_ids, test_ids = np.asarray(summary["train_nsd_ids"]), np.asarray(summary["test_nsd_ids"])
    rows = fold_rows(split, len(train_ids))
    val_rows = np.asarray(split["val"], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for fold in FOLDS:
        fit = rows[fold]
        if n_components > len(fit):
            raise ValueError(f"pca.n_components = {n_components} but fold {fold!r} has only {len(fit)} fit images; "
                             "lower models.<name>.pca.n_components")
        if n_components > batch_size:
            raise ValueError(f"pca.batch_size = {batch_size} is below pca.n_components = {n_components}; "
                             "IncrementalPCA needs batches of at least n_components images")
        stats = _streamed_stats(reader, train_ids, fit, batch_size) if spec["standardize"] else None

        def prepared(X):
            return (X - stats[0]) / stats[1] if stats is not None else X

        ipca = IncrementalPCA(n_components=n_components, batch_size=batch_size)
        bounds = batch_bounds(len(fit), batch_size, min_last=n_components)
        for b in tqdm(bounds, desc=f"pca {fold}: fit", unit="batch", disable=not progress, mininterval=2):
            X = reader.read(train_ids[fit[b]])
            if X.shape[1] < n_components:
                raise ValueError(f"pca.n_components = {n_components} exceeds the feature set's {X.shape[1]} columns")
            ipca.partial_fit(prepared(X))
        pred_ids = train_ids[val_rows] if fold == "val" else test_ids
        for key, ids in (("X_fit", train_ids[fit]), ("X_pred", pred_ids)):
            Z = np.empty((len(ids), n_components), dtype=np.float32)
            for b in tqdm(batch_bounds(len(ids), batch_size), desc=f"pca {fold}: transform {key}", unit="batch",
                          disable=not progress, mininterval=2):
                Z[b] = ipca.transform(prepared(reader.read(ids[b])))
            out[f"{fold}.{key}"] = Z
        out[f"{fold}.explained_variance_ratio"] = ipca.explained_variance_ratio_.astype(np.float32)
        log.info("pca %s: %d components explain %.1f %% of the variance of %d fit images", fold, n_components,
                 100 * float(ipca.explained_variance_ratio_.sum()), len(fit))
    log.info("pca done in %.1f s", time.time() - t0)
    return out


def pca_folds(arrays: dict[str, np.ndarray]) -> dict[str, tuple]:
    """``{fold: (X_fit, X_pred)}`` from :func:`fit_pca`'s arrays (the PCA output is used as it is)."""
    return {fold: (np.asarray(arrays[f"{fold}.X_fit"], np.float32), np.asarray(arrays[f"{fold}.X_pred"], np.float32))
            for fold in FOLDS}


def build_pca(spec: dict[str, Any], summary_path, split_path, stores: dict[str, str | Path], out) -> None:
    """The PCA of a feature set for one subject's two folds (see :func:`.featuresets.fit_pca`)."""
    from .featuresets import fit_pca

    summary, split = read_json(summary_path), read_json(split_path)
    arrays = fit_pca(spec, summary, split, stores)
    arrays["fit_rows"] = np.asarray(split["fit"])
    arrays["val_rows"] = np.asarray(split["val"])
    save_npz(out, **arrays)
