"""Designs: what a readout fits from, computed once per subject, feature set and design parameters.

Each design is built for the two folds of a subject (``val``: fit on the fit images, predict
the held-out validation images; ``test``: fit on all training images, predict the test
images) from the feature set's ``X_fit`` / ``X_pred`` of that fold, and stored as arrays named
``<fold>.<name>`` in one uncompressed ``.npz`` that fit jobs memory-map (:func:`open_npz`).

``decomposition`` (ridge, pca_linear)
    ``U`` (n, k), ``s`` (k,), ``P`` (m, k) = the prediction rows projected on the
    right-singular vectors, ``method``; with ``n_folds``, the same per contiguous fold
    (``kfold<i>.rows``, ``kfold<i>.U`` ...) for ``cv: kfold``.
``matrix`` (torch_linear, mlp)
    ``X_fit`` and ``X_pred`` as they are (already standardised by the feature set).
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import ridge

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


def open_npz(path: str | Path, mmap_min_bytes: int = 1 << 16) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` (as ``np.savez`` writes), large ones memory-mapped.

    ``np.load`` reads every member of a zip into memory; fit jobs instead map the big arrays of
    a shared design (a Gram-method ``U`` of 10,000 x 10,000 images is 400 MB), so that parallel
    jobs share the page cache instead of each holding a copy. Compressed members are read.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED or info.file_size < mmap_min_bytes:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            fh.seek(info.header_offset)
            header = fh.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: member {info.filename} has no local zip header")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects")
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                  order="F" if fortran else "C")
    return out
