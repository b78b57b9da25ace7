"""Ensembles: models combined per region or per vertex, with weights chosen on held-out predictions.

Each member's predictions are scored by Pearson r against the responses, on the **out-of-fold
predictions of the fit images** (``select_on: oof``, the default: every member's ``oof_pred``,
which ridge and pca_linear make for such an ensemble, their exact leave-one-out, and the
trained readouts with ``cv_folds``), or on the validation split (``select_on: val``). Then, per region (the
partition the readouts are fitted on; a member's score there is its mean r over the region's
vertices, a constant prediction counting as r = 0):

``best``
    the member with the highest mean r (the first listed on a tie);
``mean``
    the unweighted mean of the members;
``weighted``
    the mean weighted by ``max(mean r, 0)`` (equal weights where no member is above 0);

or per vertex:

``softmax``
    weights ``w_mv`` proportional to ``exp(r_mv / tau)`` over the members ``m`` at each vertex
    ``v`` (Adeli et al.'s 2023 ensemble, with ``tau`` 0.025: their ``softmax(40 r)``); ``tau`` to
    0 is the best member at each vertex, ``tau`` to infinity their mean; a member that does not
    predict a vertex (NaN there) has weight 0 at it.

The same weights apply to the validation and test predictions. **Selection bias**: weights chosen
on the validation split make an ensemble's validation score optimistic; weights chosen on the fit
images' out-of-fold predictions do not (neither score saw the images the weights were chosen on).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_json, open_npz, read_json, save_npz
from .regions import load_region_labels

log = logging.getLogger(__name__)

METHODS = ("best", "mean", "weighted", "softmax")
#: Each method in a few words (the leaderboard's readout column).
METHOD_LABELS = {"best": "best per region", "mean": "mean", "weighted": "weighted per region",
                 "softmax": "softmax per vertex"}
SELECT_ON = ("oof", "val")
NOTES = {
    "val": "weights chosen on the validation split: this ensemble's validation scores are optimistic; test "
           "scores (where known) are not",
    "oof": "weights chosen on the out-of-fold predictions of the fit images: validation and test scores saw none "
           "of the images the weights were chosen on",
}


def pearson_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r per column (float64); 0 where either column is constant, NaN where ``pred`` is NaN."""
    from ..evaluate.scoring import pearson_columns as pearson

    pred = np.asarray(pred)
    missing = np.isnan(pred).any(axis=0)
    r = np.nan_to_num(pearson(y, np.where(missing, 0.0, pred)), nan=0.0)
    r[missing] = np.nan
    return r


def region_scores(r: np.ndarray, labels: np.ndarray, regions: list[str]) -> np.ndarray:
    """Mean r of each member in each region, from per-vertex r (members, vertices): (members, regions)."""
    out = np.full((r.shape[0], len(regions)), np.nan)
    for j, region in enumerate(regions):
        sel = labels == region
        if sel.any():
            counts = (~np.isnan(r[:, sel])).sum(axis=1)  # a member predicting none of them: NaN
            sums = np.nansum(r[:, sel], axis=1)
            out[:, j] = np.divide(sums, counts, out=np.full(len(r), np.nan), where=counts > 0)
    return out


def region_weights(scores: np.ndarray, method: str) -> np.ndarray:
    """Weights (members, regions) of a per-region method, each present region's column summing to 1."""
    if method not in METHODS or method == "softmax":
        raise ValueError(f"unknown per-region method {method!r}; valid: best, mean, weighted")
    m, k = scores.shape
    w = np.zeros((m, k))
    for j in range(k):
        col = scores[:, j]
        if np.isnan(col).all():
            continue
        if method == "best":
            w[int(np.argmax(np.nan_to_num(col, nan=-np.inf))), j] = 1.0
        elif method == "mean":
            w[:, j] = 1.0 / m
        else:
            pos = np.maximum(np.nan_to_num(col, nan=0.0), 0.0)
            w[:, j] = pos / pos.sum() if pos.sum() > 0 else 1.0 / m
    return w


def vertex_weights(r: np.ndarray, tau: float) -> np.ndarray:
    """Per-vertex softmax weights (members, vertices) of per-vertex r (NaN: the member does not
    predict the vertex; weight 0). ``tau`` 0 gives all weight to the best member at each vertex."""
    r = np.asarray(r, dtype=np.float64)
    present = ~np.isnan(r)
    if tau == 0:
        best = np.argmax(np.where(present, r, -np.inf), axis=0)
        w = np.zeros_like(r)
        w[best, np.arange(r.shape[1])] = 1.0
        return w * present.any(axis=0)
    z = np.where(present, r / tau, -np.inf)
    top = np.max(z, axis=0)
    with np.errstate(invalid="ignore"):
        e = np.where(present, np.exp(z - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(axis=0)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def combine(preds: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The weighted combination of member predictions (images, vertices): weights (members, vertices)."""
    out = np.zeros(np.shape(preds[0]), dtype=np.float64)
    for i, p in enumerate(preds):
        w = weights[i]
        if w.any():
            out += w * np.nan_to_num(np.asarray(p, dtype=np.float64))
    return out.astype(np.float32)


def ensemble(members: list[str], method: str, y_sel: np.ndarray, sel_preds: dict[str, np.ndarray],
             preds: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
             tau: float = 0.025) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Combine members' ``val_pred`` / ``test_pred`` with weights chosen on ``sel_preds`` (each
    member's predictions of the selection images, ``y_sel`` their responses).

    Returns the ensemble's arrays (``val_pred``, ``test_pred``) and one record per region and
    member: region, n_vertices, model, r (the member's mean r there on the selection images),
    weight (its mean weight over the region's vertices), chosen (weight above 0).
    """
    labels = np.asarray(labels).astype(str)
    regions = list(dict.fromkeys(labels.tolist()))  # present regions, in vertex order
    r = np.stack([pearson_columns(y_sel, sel_preds[m]) for m in members])  # (members, vertices)
    scores = region_scores(r, labels, regions)
    if method == "softmax":
        weights = vertex_weights(r, tau)
    else:
        per_region = region_weights(scores, method)
        index = {region: j for j, region in enumerate(regions)}
        weights = per_region[:, [index[x] for x in labels]]
    arrays = {key: combine([preds[m][key] for m in members], weights) for key in ("val_pred", "test_pred")}
    records = []
    for j, region in enumerate(regions):
        sel = labels == region
        for i, model in enumerate(members):
            w = float(weights[i, sel].mean())
            records.append({"region": region, "n_vertices": int(sel.sum()), "model": model, "r": float(scores[i, j]),
                            "weight": w, "chosen": bool(w > 0)})
    return arrays, records


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
    select_on: str = "oof",
    tau: float = 0.025,
) -> list[dict[str, Any]]:
    """Combine members' merged predictions (see the module docstring); write the ensemble's
    predictions like a model's (``val_pred``, ``test_pred``) and its selection (JSON)."""
    from ..data.read import load_fmri

    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {', '.join(SELECT_ON)}, got {select_on!r}")
    split = read_json(split_path)
    labels = load_region_labels(regions_path)
    fmri = load_fmri(data_root, subject, hemi)
    y_val = np.asarray(fmri[np.asarray(split["val"])], dtype=np.float32)
    preds = {m: open_npz(path) for m, path in members.items()}
    for m, p in preds.items():
        if p["val_pred"].shape != y_val.shape:
            raise ValueError(f"{members[m]}: val_pred is {p['val_pred'].shape}, the validation responses "
                             f"{y_val.shape}; rerun model {m}")
    if select_on == "val":
        y_sel, sel_preds = y_val, {m: p["val_pred"] for m, p in preds.items()}
    else:
        fit = np.asarray(split["fit"])
        y_sel = np.asarray(fmri[fit], dtype=np.float32)
        lacking = [m for m, p in preds.items() if "oof_pred" not in p]
        if lacking:
            raise ValueError(f"members {', '.join(lacking)} have no out-of-fold predictions (oof_pred): give a "
                             "trained readout cv_folds (ridge and pca_linear make them when the DAG knows an "
                             f"ensemble with select_on: oof reads them), or set select_on: val for ensemble {name}")
        sel_preds = {m: np.asarray(p["oof_pred"])[fit] for m, p in preds.items()}
    arrays, records = ensemble(list(members), method, y_sel, sel_preds, preds, labels, tau)
    save_npz(out, **arrays)
    for rec in records:
        rec.update(ensemble=name, method=method, subject=subject, hemi=hemi, selected_on=select_on)
    atomic_write_json(out_selection, {"ensemble": name, "method": method, "subject": subject, "hemi": hemi,
                                      "selected_on": select_on, "note": NOTES[select_on], "records": records})
    chosen = [rec for rec in records if rec["chosen"]]
    log.info("%s %s %s (%s): %d regions; %s", subject, hemi, name, method, len({r["region"] for r in records}),
             ", ".join(f"{r['region']}: {r['model']} ({r['weight']:.2f})" for r in chosen[:12]))
    return records


def selection_table(paths: list[str | Path], outdir) -> "Any":
    """Gather ensembles' selections into one tidy table, written as ``selection.csv`` / ``.parquet``.

    One row per ensemble, subject, hemisphere, region and member model: ``method``,
    ``n_vertices``, ``r`` (the member's mean r there, on the images the weights were chosen on),
    ``weight`` (its mean weight over the region's vertices), ``chosen``, ``selected_on`` (``oof``
    or ``val``) and ``note`` (what that means for the ensemble's scores).
    """
    import pandas as pd

    from ..io import save_table

    rows = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        rows.extend(doc["records"])
    cols = ["ensemble", "method", "subject", "hemi", "region", "n_vertices", "model", "r", "weight", "chosen",
            "selected_on"]
    table = pd.DataFrame(rows, columns=cols)
    table["note"] = table["selected_on"].map(NOTES)
    outdir = Path(outdir)
    for ext in ("csv", "parquet"):
        save_table(table, outdir / f"selection.{ext}")
    return table
