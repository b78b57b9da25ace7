"""The readout stage's rule bodies: PCA, design, one fit job, an ensemble, the selection table.

Per subject and feature set: ``pca`` (optional) then one ``design`` per design kind; per
subject x hemisphere x model: a fit job per region (or one per hemisphere for the torch
readouts); per subject x hemisphere x ensemble: the combination of its members. Fit jobs import
numpy only (torch for the torch readouts), memory-map the shared design, and read only their
region's columns of the fMRI.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_json, read_json, save_npz
from ..regions import load_region_labels
from . import get_readout
from .backend import get_backend
from .designs import build_design, fold_arrays, open_npz
from .featuresets import FOLDS

log = logging.getLogger(__name__)
HEMISPHERE_UNIT = "hemisphere"  # a fit job that fits every region of a hemisphere


def read_columns(arr: np.ndarray, cols: np.ndarray, block_rows: int = 256) -> np.ndarray:
    """``arr[:, cols]`` of a (memory-mapped) row-major array, reading it block of rows by block.

    Fancy-indexing columns of a memory map touches it row by row; copying blocks of contiguous
    rows and gathering in memory is 2-5x faster on a 750 MB hemisphere.
    """
    cols = np.asarray(cols, dtype=np.int64)
    out = np.empty((arr.shape[0], cols.size), dtype=np.float32)
    for i in range(0, arr.shape[0], block_rows):
        block = np.asarray(arr[i:i + block_rows], dtype=np.float32)
        np.take(block, cols, axis=1, out=out[i:i + block_rows])
    return out


def split_targets(data_root, subject: str, hemi: str, regions_path, regions: list[str], outdir,
                  block_rows: int = 256) -> dict[str, int]:
    """Write each region's training fMRI as its own ``<outdir>/<region>.npy`` (images x vertices).

    A region's vertices are scattered over the hemisphere, so a fit job reading its columns from
    the fMRI would touch every page of it (750 MB at real size); reading the hemisphere once here
    lets each of the ~30 region jobs per model read only its own few megabytes. Regions absent
    from this hemisphere get an (images x 0) array. Returns ``{region: n_vertices}``.
    """
    from ..data import load_fmri
    from ..io import save_npy

    labels = np.asarray(load_region_labels(regions_path)).astype(str)
    fmri = load_fmri(data_root, subject, hemi)
    if fmri.shape[1] != labels.size:
        raise ValueError(f"{regions_path}: {labels.size} vertices, but the {subject} {hemi} fMRI has {fmri.shape[1]}; "
                         "rerun the regions rule")
    cols = {r: np.flatnonzero(labels == r) for r in regions}
    out = {r: np.empty((fmri.shape[0], c.size), dtype=np.float32) for r, c in cols.items()}
    for i in range(0, fmri.shape[0], block_rows):
        block = np.asarray(fmri[i:i + block_rows], dtype=np.float32)
        for r, c in cols.items():
            np.take(block, c, axis=1, out=out[r][i:i + block_rows])
    for r, arr in out.items():
        save_npy(Path(outdir) / f"{r}.npy", arr)
    log.info("%s %s: training fMRI of %d regions written to %s", subject, hemi, len(regions), outdir)
    return {r: int(c.size) for r, c in cols.items()}


# ----------------------------------------------------------------------------- cached steps


def build_pca(spec: dict[str, Any], summary_path, split_path, stores: dict[str, str | Path], out) -> None:
    """The PCA of a feature set for one subject's two folds (see :func:`.featuresets.fit_pca`)."""
    from .featuresets import fit_pca

    summary, split = read_json(summary_path), read_json(split_path)
    arrays = fit_pca(spec, summary, split, stores)
    arrays["fit_rows"] = np.asarray(split["fit"])
    arrays["val_rows"] = np.asarray(split["val"])
    save_npz(out, **arrays)


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
    if spec.get("pca"):
        if pca_path is None:
            raise ValueError("this feature set has a PCA: pass its output (--pca)")
        from .featuresets import pca_folds

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


# ----------------------------------------------------------------------------- fit


def fit_unit(
    readout: str,
    params: dict[str, Any],
    design_path,
    data_root,
    subject: str,
    hemi: str,
    regions_path,
    unit: str,
    out,
    backend: str = "numpy",
    targets=None,
) -> dict[str, Any]:
    """Fit one region (``unit`` = its name), or every region of the hemisphere (``unit`` =
    ``hemisphere``), for both folds; write predictions, vertices and per-vertex info (npz).

    ``targets``: the region's fMRI as :func:`split_targets` wrote it; without it the region's
    columns are read from the data root's fMRI."""
    from ..data import load_fmri

    t0 = time.time()
    r = get_readout(readout)
    params = r.normalize(params)
    labels = np.asarray(load_region_labels(regions_path)).astype(str)
    if unit == HEMISPHERE_UNIT:
        regions = list(dict.fromkeys(labels.tolist()))
        vertices = np.flatnonzero(np.isin(labels, regions))
    else:
        regions = [unit]
        vertices = np.flatnonzero(labels == unit)
    design = open_npz(design_path)
    fit_rows = np.asarray(design["fit_rows"])
    n_val, n_test = len(design["val_rows"]), int(design["n_test"])
    arrays: dict[str, np.ndarray] = {"vertices": vertices}
    if vertices.size == 0:
        arrays["val_pred"] = np.zeros((n_val, 0), np.float32)
        arrays["test_pred"] = np.zeros((n_test, 0), np.float32)
        save_npz(out, **arrays)
        log.info("%s %s %s: region absent here, nothing to fit", subject, hemi, unit)
        return {"n_vertices": 0}
    if targets is not None:
        Y = np.load(targets)
        if Y.shape[1] != vertices.size:
            raise ValueError(f"{targets}: {Y.shape[1]} vertices, but region {unit} has {vertices.size} in "
                             f"{regions_path}; rerun the targets rule")
    else:
        fmri = load_fmri(data_root, subject, hemi)
        if vertices.size == fmri.shape[1]:  # the whole hemisphere, in order: no gather
            Y = np.ascontiguousarray(fmri, dtype=np.float32)
        else:
            Y = read_columns(fmri, vertices)
    xp = get_backend(backend)
    for fold, rows in zip(FOLDS, (fit_rows, None)):  # val: fit on the fit rows of Y, without copying them
        prepared = fold_arrays(design, fold)
        if r.separable:  # one alpha per target: all regions of the unit in one call, no column copies
            pred, info = r.fit_predict(prepared, Y, params, xp, rows=rows)
        else:  # one model per region
            pred = np.empty((n_val if fold == "val" else n_test, vertices.size), np.float32)
            info = {}
            for region in regions:
                cols = np.flatnonzero(labels[vertices] == region)
                p, inf = r.fit_predict(prepared, np.take(Y, cols, axis=1), params, xp, rows=rows)
                pred[:, cols] = p
                for key, value in inf.items():
                    info.setdefault(key, np.full(vertices.size, np.nan))[cols] = value
        arrays[f"{fold}_pred"] = pred
        for key, value in info.items():
            arrays[f"{fold}.{key}"] = value
    save_npz(out, **arrays)
    log.info("%s %s %s (%s): %d vertices in %d region(s) fitted in %.2f s", subject, hemi, unit, readout,
             vertices.size, len(regions), time.time() - t0)
    return {"n_vertices": int(vertices.size)}


# ----------------------------------------------------------------------------- ensembles


def build_ensemble(
    name: str,
    method: str,
    members: dict[str, str | Path],
    data_root,
    subject: str,
    hemi: str,
    regions_path,
    split_path,
    out,
    out_selection,
) -> list[dict[str, Any]]:
    """Combine members' merged predictions per region (see :mod:`.ensembles`); write the
    ensemble's predictions like a model's (``val_pred``, ``test_pred``) and its selection (JSON)."""
    from ..data import load_fmri
    from .ensembles import BIAS_NOTE, ensemble

    split = read_json(split_path)
    labels = load_region_labels(regions_path)
    fmri = load_fmri(data_root, subject, hemi)
    y_val = np.asarray(fmri[np.asarray(split["val"])], dtype=np.float32)
    preds = {m: open_npz(path) for m, path in members.items()}
    for m, p in preds.items():
        if p["val_pred"].shape != y_val.shape:
            raise ValueError(f"{members[m]}: val_pred is {p['val_pred'].shape}, the validation responses "
                             f"{y_val.shape}; rerun model {m}")
    arrays, records = ensemble(list(members), method, y_val, preds, labels)
    save_npz(out, **arrays)
    for rec in records:
        rec.update(ensemble=name, method=method, subject=subject, hemi=hemi)
    atomic_write_json(out_selection, {"ensemble": name, "method": method, "subject": subject, "hemi": hemi,
                                      "note": BIAS_NOTE, "records": records})
    chosen = [rec for rec in records if rec["chosen"]]
    log.info("%s %s %s (%s): %d regions; %s", subject, hemi, name, method, len({r["region"] for r in records}),
             ", ".join(f"{r['region']}: {r['model']} ({r['weight']:.2f})" for r in chosen[:12]))
    return records


def selection_table(paths: list[str | Path], outdir) -> "Any":
    """Gather ensembles' selections into one tidy table, written as ``selection.csv`` / ``.parquet``.

    One row per ensemble, subject, hemisphere, region and member model: ``method``,
    ``n_vertices``, ``val_r`` (the member's mean validation r there), ``weight``, ``chosen``,
    ``selected_on`` (always ``val``) and ``note`` (the selection-bias caveat).
    """
    import pandas as pd

    from ..io import save_table
    from .ensembles import BIAS_NOTE

    rows = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        rows.extend(doc["records"])
    cols = ["ensemble", "method", "subject", "hemi", "region", "n_vertices", "model", "val_r", "weight", "chosen"]
    table = pd.DataFrame(rows, columns=cols)
    table["selected_on"] = "val"
    table["note"] = BIAS_NOTE
    outdir = Path(outdir)
    for ext in ("csv", "parquet"):
        save_table(table, outdir / f"selection.{ext}")
    return table
