"""Per-region selection and ensembles of models, chosen on the validation split.

For each region (the partition the readouts are fitted on), every member model's validation
predictions are scored by the mean Pearson r over the region's vertices (a constant
prediction counts as r = 0); the region's prediction is then

``best``
    the member with the highest mean r (the first listed on a tie);
``mean``
    the unweighted mean of the members;
``weighted``
    the mean weighted by ``max(mean r, 0)`` (equal weights where no member is above 0).

The same weights apply to the test predictions. **Selection bias**: the weights are chosen on
the validation split, so the ensemble's validation scores are optimistic (most for ``best``
with many members and small regions); its test scores, where the test responses are known
(the demo), are not.
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

METHODS = ("best", "mean", "weighted")
BIAS_NOTE = ("weights chosen on the validation split: this ensemble's validation scores are optimistic; "
             "test scores (where known) are not")


def pearson_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r per column (float64); 0 where either column is constant."""
    from ..evaluate.scoring import pearson_columns as pearson

    return np.nan_to_num(pearson(y, pred), nan=0.0)


def region_scores(y_val: np.ndarray, val_preds: list[np.ndarray], labels: np.ndarray, regions: list[str]) -> np.ndarray:
    """Mean validation r of each member in each region: (members, regions); NaN for an absent region."""
    r = np.stack([pearson_columns(y_val, p) for p in val_preds])  # (members, vertices)
    out = np.full((len(val_preds), len(regions)), np.nan)
    for j, region in enumerate(regions):
        sel = labels == region
        if sel.any():
            out[:, j] = r[:, sel].mean(axis=1)
    return out


def region_weights(scores: np.ndarray, method: str) -> np.ndarray:
    """Weights (members, regions), each present region's column summing to 1."""
    if method not in METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; valid: {', '.join(METHODS)}")
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


def combine(preds: list[np.ndarray], labels: np.ndarray, regions: list[str], weights: np.ndarray) -> np.ndarray:
    """The weighted combination of member predictions (images, vertices), region by region."""
    out = np.zeros(preds[0].shape, dtype=np.float32)
    for j, region in enumerate(regions):
        cols = np.flatnonzero(labels == region)
        if cols.size == 0:
            continue
        for i, p in enumerate(preds):
            if weights[i, j]:
                out[:, cols] += np.float32(weights[i, j]) * np.asarray(p[:, cols], dtype=np.float32)
    return out


def ensemble(
    members: list[str],
    method: str,
    y_val: np.ndarray,
    preds: dict[str, dict[str, np.ndarray]],
    labels: np.ndarray,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Combine members' ``val_pred`` / ``test_pred`` per region.

    Returns the ensemble's arrays (``val_pred``, ``test_pred``) and one record per region and
    member: region, n_vertices, model, val_r (the member's mean r there), weight, chosen.
    """
    labels = np.asarray(labels).astype(str)
    regions = list(dict.fromkeys(labels.tolist()))  # present regions, in vertex order
    scores = region_scores(y_val, [preds[m]["val_pred"] for m in members], labels, regions)
    weights = region_weights(scores, method)
    arrays = {key: combine([preds[m][key] for m in members], labels, regions, weights)
              for key in ("val_pred", "test_pred")}
    records = []
    for j, region in enumerate(regions):
        n = int((labels == region).sum())
        for i, model in enumerate(members):
            records.append({"region": region, "n_vertices": n, "model": model, "val_r": float(scores[i, j]),
                            "weight": float(weights[i, j]), "chosen": bool(weights[i, j] > 0)})
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
) -> list[dict[str, Any]]:
    """Combine members' merged predictions per region (see :mod:`.ensembles`); write the
    ensemble's predictions like a model's (``val_pred``, ``test_pred``) and its selection (JSON)."""
    from ..data.read import load_fmri
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
