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
        if pca.get("scope", "subject") == "all":
            spec_pca["scope"] = "all"
    return {"features": list(features), "standardize": bool(standardize), "pca": spec_pca}


def featureset_id(spec: dict[str, Any], max_len: int = 80) -> str:
    """A stable, readable id: features joined by ``+`` (``/`` -> ``.``), ``-raw`` when not
    standardised, ``-pca<n>b<batch>``; longer than ``max_len``: cut, plus 8 hex of the spec's hash."""
    name = "+".join(f.replace("/", ".") for f in spec["features"])
    if not spec["standardize"]:
        name += "-raw"
    if spec.get("pca"):
        name += f"-pca{spec['pca']['n_components']}b{spec['pca']['batch_size']}"
        if spec["pca"].get("scope") == "all":
            name += "-shared"
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


def _fit_ipca(reader: FeatureReader, ids: np.ndarray, spec: dict[str, Any], label: str, progress: bool):
    """Column statistics (if ``standardize``) and an ``IncrementalPCA`` fitted on the images ``ids``,
    in batches of ``batch_size`` (a last batch smaller than ``n_components`` joins the one before,
    as partial_fit requires). Returns ``((mean, scale) or None, ipca)``."""
    from sklearn.decomposition import IncrementalPCA
    from tqdm import tqdm

    n_components, batch_size = spec["pca"]["n_components"], spec["pca"]["batch_size"]
    if n_components > len(ids):
        raise ValueError(f"pca.n_components = {n_components} but {label} has only {len(ids)} fit images; "
                         "lower models.<name>.pca.n_components")
    if n_components > batch_size:
        raise ValueError(f"pca.batch_size = {batch_size} is below pca.n_components = {n_components}; "
                         "IncrementalPCA needs batches of at least n_components images")
    rows = np.arange(len(ids))
    stats = _streamed_stats(reader, ids, rows, batch_size) if spec["standardize"] else None
    ipca = IncrementalPCA(n_components=n_components, batch_size=batch_size)
    for b in tqdm(batch_bounds(len(ids), batch_size, min_last=n_components), desc=f"pca {label}: fit", unit="batch",
                  disable=not progress, mininterval=2):
        X = reader.read(ids[b])
        if X.shape[1] < n_components:
            raise ValueError(f"pca.n_components = {n_components} exceeds the feature set's {X.shape[1]} columns")
        ipca.partial_fit((X - stats[0]) / stats[1] if stats is not None else X)
    log.info("pca %s: %d components explain %.1f %% of the variance of %d fit images", label, n_components,
             100 * float(ipca.explained_variance_ratio_.sum()), len(ids))
    return stats, ipca


def _transform(reader: FeatureReader, ids: np.ndarray, stats, components: np.ndarray, pca_mean: np.ndarray,
               batch_size: int, label: str, progress: bool) -> np.ndarray:
    """The images ``ids`` projected on a PCA (``IncrementalPCA.transform``: no whitening), in batches."""
    from tqdm import tqdm

    Z = np.empty((len(ids), len(components)), dtype=np.float32)
    for b in tqdm(batch_bounds(len(ids), batch_size), desc=f"pca: transform {label}", unit="batch",
                  disable=not progress, mininterval=2):
        X = reader.read(ids[b])
        if stats is not None:
            X = (X - stats[0]) / stats[1]
        Z[b] = (X - pca_mean) @ components.T
    return Z


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
    rows, in row order; then one pass transforming every training and test row.

    Returns ``{"<fold>.X_fit", "<fold>.X_pred", "<fold>.explained_variance_ratio"}`` (float32).
    """
    t0 = time.time()
    reader = FeatureReader(spec["features"], stores)
    train_ids, test_ids = np.asarray(summary["train_nsd_ids"]), np.asarray(summary["test_nsd_ids"])
    rows = fold_rows(split, len(train_ids))
    val_rows = np.asarray(split["val"], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for fold in FOLDS:
        stats, ipca = _fit_ipca(reader, train_ids[rows[fold]], spec, f"fold {fold!r}", progress)
        pred_ids = train_ids[val_rows] if fold == "val" else test_ids
        for key, ids in (("X_fit", train_ids[rows[fold]]), ("X_pred", pred_ids)):
            out[f"{fold}.{key}"] = _transform(reader, ids, stats, ipca.components_.astype(np.float32),
                                              ipca.mean_.astype(np.float32), spec["pca"]["batch_size"],
                                              f"{fold} {key}", progress)
        out[f"{fold}.explained_variance_ratio"] = ipca.explained_variance_ratio_.astype(np.float32)
    log.info("pca done in %.1f s", time.time() - t0)
    return out


def shared_fit_ids(summaries: dict[str, dict], splits: dict[str, dict]) -> dict[str, np.ndarray]:
    """The images a PCA shared by every subject (``pca.scope: all``) is fitted on, per fold: ``val``,
    every subject's training images but any subject's validation images (a shared image is left
    out everywhere if one subject holds it out); ``test``, every subject's training images."""
    train = np.unique(np.concatenate([s["train_nsd_ids"] for s in summaries.values()]))
    held = np.unique(np.concatenate([np.asarray(s["train_nsd_ids"])[np.asarray(splits[k]["val"], dtype=np.int64)]
                                     for k, s in summaries.items()]))
    return {"val": np.setdiff1d(train, held), "test": train}


def fit_pca_shared(spec: dict[str, Any], summaries: dict[str, dict], splits: dict[str, dict],
                   stores: dict[str, str | Path], progress: bool = True) -> dict[str, np.ndarray]:
    """A feature set's PCA fitted once on the images of every subject, per fold (:func:`shared_fit_ids`):
    ``<fold>.components``, ``<fold>.pca_mean``, the standardisation's ``<fold>.mean`` and ``<fold>.scale``
    (when ``standardize``) and ``<fold>.explained_variance_ratio``. Each subject's design projects its
    own images on it (:func:`shared_pca_folds`)."""
    reader = FeatureReader(spec["features"], stores)
    out: dict[str, np.ndarray] = {}
    for fold, ids in shared_fit_ids(summaries, splits).items():
        stats, ipca = _fit_ipca(reader, ids, spec, f"all subjects, fold {fold!r}", progress)
        out[f"{fold}.components"] = ipca.components_.astype(np.float32)
        out[f"{fold}.pca_mean"] = ipca.mean_.astype(np.float32)
        out[f"{fold}.explained_variance_ratio"] = ipca.explained_variance_ratio_.astype(np.float32)
        if stats is not None:
            out[f"{fold}.mean"], out[f"{fold}.scale"] = stats
    return out


def shared_pca_folds(arrays: dict[str, np.ndarray], spec: dict[str, Any], summary: dict, split: dict,
                     stores: dict[str, str | Path], progress: bool = True) -> dict[str, tuple]:
    """``{fold: (X_fit, X_pred)}`` of one subject, its images projected on the shared PCA."""
    reader = FeatureReader(spec["features"], stores)
    train_ids, test_ids = np.asarray(summary["train_nsd_ids"]), np.asarray(summary["test_nsd_ids"])
    rows = fold_rows(split, len(train_ids))
    pred = {"val": train_ids[np.asarray(split["val"], dtype=np.int64)], "test": test_ids}
    out = {}
    for fold in FOLDS:
        stats = (arrays[f"{fold}.mean"], arrays[f"{fold}.scale"]) if f"{fold}.mean" in arrays else None
        components, mean = np.asarray(arrays[f"{fold}.components"]), np.asarray(arrays[f"{fold}.pca_mean"])
        out[fold] = tuple(_transform(reader, ids, stats, components, mean, spec["pca"]["batch_size"], f"{fold} {k}",
                                     progress) for k, ids in (("X_fit", train_ids[rows[fold]]), ("X_pred", pred[fold])))
    return out


def pca_folds(arrays: dict[str, np.ndarray]) -> dict[str, tuple]:
    """``{fold: (X_fit, X_pred)}`` from :func:`fit_pca`'s arrays (the PCA output is used as it is)."""
    return {fold: (np.asarray(arrays[f"{fold}.X_fit"], np.float32), np.asarray(arrays[f"{fold}.X_pred"], np.float32))
            for fold in FOLDS}


def build_pca(spec: dict[str, Any], summary_paths: list[str], split_paths: list[str], stores: dict[str, str | Path],
              out) -> None:
    """The PCA of a feature set: one subject's two folds (:func:`fit_pca`), or with ``pca.scope: all``
    one PCA over every subject given (:func:`fit_pca_shared`)."""
    summaries = [read_json(p) for p in summary_paths]
    splits = [read_json(p) for p in split_paths]
    if spec["pca"].get("scope") == "all":
        arrays = fit_pca_shared(spec, {s["subject"]: s for s in summaries},
                                {s["subject"]: sp for s, sp in zip(summaries, splits)}, stores)
    else:
        (summary,), (split,) = summaries, splits
        arrays = fit_pca(spec, summary, split, stores)
        arrays["fit_rows"] = np.asarray(split["fit"])
        arrays["val_rows"] = np.asarray(split["val"])
    save_npz(out, **arrays)
