"""Designs: what a readout fits from, computed once per subject, feature set and design parameters.

Each design is built for the two folds of a subject (``val``: fit on the fit images, predict
the held-out validation images; ``test``: fit on all training images, predict the test
images) from the feature set's ``X_fit`` / ``X_pred`` of that fold, and stored as arrays named
``<fold>.<name>`` in one uncompressed ``.npz`` that fit jobs memory-map (:func:`nsdflow.io.open_npz`).

``decomposition`` (ridge, pca_linear)
    ``U`` (n, k), ``s`` (k,), ``P`` (m, k) = the prediction rows projected on the
    right-singular vectors, ``method``; with ``n_folds``, the same per contiguous fold
    (``kfold<i>.rows``, ``kfold<i>.U`` ...) for ``cv: kfold``.
``matrix`` (torch_linear, mlp)
    ``X_fit`` and ``X_pred`` as they are (already standardised by the feature set).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io import open_npz, read_json, save_npz
from . import ridge
from .backend import get_backend

log = logging.getLogger(__name__)

DESIGN_KINDS = ("decomposition", "matrix")


def design_name(kind: str, params: dict[str, Any]) -> str:
    """A readable, unique name of a design: ``decomposition``, ``decomposition-svd-kfold5``, ``matrix``."""
    if kind not in DESIGN_KINDS:
        raise ValueError(f"unknown design {kind!r}; valid: {', '.join(DESIGN_KINDS)}")
    name = kind
    if kind == "decomposition":
        if params.get("decomposition", "auto") != "auto":
            name += f"-{params['decomposition']}"
        if params.get("n_folds"):
            name += f"-kfold{params['n_folds']}"
    return name


def build_design(kind: str, params: dict[str, Any], X_fit: np.ndarray, X_pred: np.ndarray, xp=None) -> dict[str, np.ndarray]:
    """One fold's design arrays from that fold's feature-set rows (see the module docstring)."""
    if kind == "matrix":
        return {"X_fit": np.ascontiguousarray(X_fit, dtype=np.float32),
                "X_pred": np.ascontiguousarray(X_pred, dtype=np.float32)}
    if kind != "decomposition":
        raise ValueError(f"unknown design {kind!r}; valid: {', '.join(DESIGN_KINDS)}")
    xp = xp or ridge._NP
    X_fit = np.asarray(X_fit, dtype=np.float32)
    mean = X_fit.mean(axis=0, dtype=np.float64).astype(np.float32)  # ~0 when standardised; exact centring
    dec = ridge.decompose(X_fit - mean, params.get("decomposition", "auto"), xp)
    out = {"U": xp.to_numpy(dec.U), "s": xp.to_numpy(dec.s),
           "P": xp.to_numpy(ridge.project(dec, np.asarray(X_pred, np.float32) - mean, xp)),
           "method": np.array(dec.method)}
    n_folds = params.get("n_folds")
    if n_folds:
        out["n_folds"] = np.array(int(n_folds))
        for i, (rows, U, s, P) in enumerate(ridge.kfold_design(X_fit, int(n_folds), params.get("decomposition", "auto"), xp)):
            out.update({f"kfold{i}.rows": rows, f"kfold{i}.U": xp.to_numpy(U), f"kfold{i}.s": xp.to_numpy(s),
                        f"kfold{i}.P": xp.to_numpy(P)})
    return out


def fold_arrays(design: dict[str, np.ndarray], fold: str) -> dict[str, np.ndarray]:
    """The arrays of one fold, without the ``<fold>.`` prefix."""
    prefix = fold + "."
    return {k[len(prefix):]: v for k, v in design.items() if k.startswith(prefix)}


def build_design_file(
    spec: dict[str, Any],
    kind: str,
    params: dict[str, Any],
    summary_path,
    split_path,
    stores: dict[str, str | Path],
    out,
    pca_path=None,
    backend: str = "numpy",
) -> None:
    """One design (``kind`` with ``params``) of a feature set for both folds of one subject."""
    t0 = time.time()
    summary, split = read_json(summary_path), read_json(split_path)
    from .featuresets import FOLDS

    if spec.get("pca"):
        if pca_path is None:
            raise ValueError("this feature set has a PCA: pass its output (--pca)")
        from .featuresets import pca_folds, shared_pca_folds

        if spec["pca"].get("scope") == "all":
            folds = shared_pca_folds(open_npz(pca_path), spec, summary, split, stores)
        else:
            folds = pca_folds(open_npz(pca_path))
    else:
        from .featuresets import load_folds

        folds = load_folds(spec, summary, split, stores)
    xp = get_backend(backend) if kind == "decomposition" else None
    arrays: dict[str, np.ndarray] = {"fit_rows": np.asarray(split["fit"]), "val_rows": np.asarray(split["val"]),
                                     "n_test": np.array(len(summary["test_nsd_ids"]))}
    for fold in FOLDS:
        X_fit, X_pred = folds[fold]
        for key, value in build_design(kind, params, X_fit, X_pred, xp).items():
            arrays[f"{fold}.{key}"] = value
    save_npz(out, **arrays)
    shape = folds["test"][0].shape
    method = f" ({arrays['test.method']})" if "test.method" in arrays else ""
    log.info("design %s%s: %d training images x %d features, %.1f s", kind, method, shape[0], shape[1], time.time() - t0)
