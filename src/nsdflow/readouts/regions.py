"""Regions: the partition of a hemisphere's vertices that readouts are fitted on.

ROI classes overlap (a vertex can be in V1v and in the early stream) and many vertices are in
no ROI. Readouts need a partition, so each vertex goes to the ROI of the first class, in the
configured priority order, that labels it; the vertices no class labels form one more region,
``unassigned``, so that merged predictions cover every vertex. With no classes configured the
whole hemisphere is one region, ``all``.

ROIs are looked up by name through each class's mapping file, never by integer label.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.layout import ROI_CLASSES, UNKNOWN
from ..data.read import roi_membership

if TYPE_CHECKING:
    import pandas as pd

UNASSIGNED = "unassigned"
WHOLE = "all"


def region_names(roi_classes: list[str]) -> list[str]:
    """Every region a configuration can produce, in priority order (fixed before any data is read)."""
    if not roi_classes:
        return [WHOLE]
    unknown = [c for c in roi_classes if c not in ROI_CLASSES]
    if unknown:
        raise ValueError(f"unknown ROI class {', '.join(map(repr, unknown))}; valid classes: {', '.join(ROI_CLASSES)}")
    names = [name for cls in roi_classes for name in ROI_CLASSES[cls]]
    return names + [UNASSIGNED]


def region_table(root: str | Path, subject: str, hemi: str, roi_classes: list[str]) -> "pd.DataFrame":
    """One row per challenge vertex: ``vertex``, ``region``, and one column per ROI class (its ROI name).

    All six classes are read when present so that scores can be summarised per ROI of any
    class; only ``roi_classes`` (in order) decide ``region``.
    """
    columns: dict[str, np.ndarray] = {}
    for cls in ROI_CLASSES:
        try:
            labels, mapping = roi_membership(root, subject, hemi, cls)
        except Exception:
            if cls in roi_classes:
                raise
            continue
        lookup = np.array([mapping.get(i, UNKNOWN) for i in range(int(labels.max(initial=0)) + 1)], dtype=object)
        columns[cls] = lookup[labels]
    n = len(next(iter(columns.values()))) if columns else None
    if n is None:
        raise ValueError(f"{subject} {hemi}: no ROI masks could be read")
    import pandas as pd

    region = np.full(n, UNASSIGNED if roi_classes else WHOLE, dtype=object)
    assigned = np.zeros(n, dtype=bool)
    for cls in roi_classes:
        names = columns[cls]
        take = ~assigned & (names != UNKNOWN)
        region[take] = names[take]
        assigned |= take
    df = pd.DataFrame({"vertex": np.arange(n), "region": region})
    for cls, names in columns.items():
        df[cls] = names
    return df


def save_region_table(table: "pd.DataFrame", path: str | Path) -> None:
    """Write a region table as .npz of string arrays (readable without pandas: fit jobs stay light)."""
    from ..io import save_npz

    save_npz(path, **{col: table[col].to_numpy(dtype=str if col != "vertex" else np.int64) for col in table.columns})


def load_region_labels(path: str | Path) -> np.ndarray:
    """The ``region`` of each vertex, without importing pandas."""
    with np.load(path) as f:
        return f["region"]


def load_region_table(path: str | Path) -> "pd.DataFrame":
    import pandas as pd

    with np.load(path) as f:
        return pd.DataFrame({k: f[k] for k in f.files})


def region_vertices(regions: np.ndarray, region: str) -> np.ndarray:
    """Challenge-vertex indices (ascending) of one region; empty if it is absent here."""
    return np.flatnonzero(np.asarray(regions) == region)
