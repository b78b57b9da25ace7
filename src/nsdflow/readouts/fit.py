"""One fit job: a readout fitted on one region, one hemisphere, for both folds of a subject.

Fit jobs import numpy only (torch for the torch readouts), memory-map the shared design, and
read only their region's columns of the fMRI (or the region's file from ``nsdflow targets``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..io import open_npz, save_npz
from ..results import HEMISPHERE_UNIT
from .backend import get_backend
from .designs import fold_arrays
from .featuresets import FOLDS
from .params import load_readout
from .regions import load_region_labels
from .targets import read_columns

log = logging.getLogger(__name__)



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

    ``readout``: the readout's ``module:Class`` (see :data:`.registry.READOUTS`).

    ``targets``: the region's fMRI as :func:`split_targets` wrote it; without it the region's
    columns are read from the data root's fMRI."""
    from ..data.read import load_fmri

    t0 = time.time()
    r = load_readout(readout)
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
