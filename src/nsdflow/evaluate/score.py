"""Score one model's predictions on one hemisphere, per vertex, the way the leaderboard did."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.read import load_fmri, load_withheld
from ..io import load_npz, read_json, save_table
from ..readouts.regions import load_region_table
from .scoring import (
    chance_score,
    noise_ceiling_fraction,
    noise_normalized_score,
    pearson_columns,
)

log = logging.getLogger(__name__)


def score_hemisphere(
    pred_path: str | Path,
    data_root: str | Path,
    withheld_root: str | Path | None,
    subject: str,
    hemi: str,
    regions_path: str | Path,
    split_path: str | Path,
    out: str | Path,
) -> pd.DataFrame:
    """Per-vertex scores of one model on one hemisphere, written as a Parquet table.

    Columns: ``vertex, region, <one column per ROI class>, r_val, nc, score_val`` and, where the
    withheld test responses exist (the demo), ``r_test, score_test``.
    """
    pred = load_npz(pred_path)
    split = read_json(split_path)
    table = load_region_table(regions_path)
    fmri = load_fmri(data_root, subject, hemi)
    y_val = np.asarray(fmri[np.asarray(split["val"])], dtype=np.float32)
    r_val = pearson_columns(y_val, pred["val_pred"])
    table["r_val"] = r_val
    nc = load_withheld(withheld_root, subject, hemi, "noise_ceiling") if withheld_root else None
    if nc is not None:
        nc, unit = noise_ceiling_fraction(nc, f"{subject} {hemi} noise ceiling")
        if nc.shape != r_val.shape:
            raise ValueError(f"{subject} {hemi}: {nc.size} noise ceilings for {r_val.size} vertices")
        table["nc"] = nc
        table["score_val"] = noise_normalized_score(r_val, nc)
        table["chance_val"] = chance_score(y_val, pred["val_pred"], nc)
    test = load_withheld(withheld_root, subject, hemi, "test_fmri") if withheld_root else None
    if test is not None:
        r_test = pearson_columns(test, pred["test_pred"])
        table["r_test"] = r_test
        if nc is not None:
            table["score_test"] = noise_normalized_score(r_test, nc)
            table["chance_test"] = chance_score(test, pred["test_pred"], nc)
    if "val.alpha" in pred:
        table["alpha"] = pred["val.alpha"]
    n_nan = int(np.isnan(r_val).sum())
    if n_nan:
        log.warning("%s %s: %d vertices have a constant prediction or response; their r counts as 0", subject, hemi,
                    n_nan)
    save_table(table, out)
    return table
