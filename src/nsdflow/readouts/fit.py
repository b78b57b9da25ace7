"""One fit job: a readout fitted on one region, one hemisphere, or both hemispheres of a subject.

A job fits the runs of :mod:`.folds` (the ``val`` and ``test`` runs, or ``cv_folds`` folds) and
writes, per vertex of its unit, ``val_pred`` (validation images), ``test_pred`` (test images),
``oof_pred`` where it has out-of-fold predictions of every training image, and per-vertex
information (ridge's alphas, the Gaussian readout's positions...). A job over both hemispheres
(unit ``subject``) writes each hemisphere's arrays under ``lh.`` and ``rh.``.

Readouts fitted from a cached design (ridge, pca_linear, torch_linear, mlp: :func:`fit_design`)
import numpy only (torch for the torch readouts), memory-map the shared design and read only
their region's columns of the fMRI (or the region's own file from ``nsdflow targets``). The
trained readouts that read feature maps or train across subjects define their own ``fit``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import open_npz, read_json, save_npz
from ..results import HEMISPHERE_UNIT, SUBJECT_UNIT
from . import folds
from .backend import get_backend
from .designs import fold_arrays
from .params import Readout, load_readout
from .regions import load_region_labels, load_region_table
from .targets import read_columns

log = logging.getLogger(__name__)


@dataclass
class FitData:
    """Everything a readout's fit reads, for one job (see :func:`fit_job`)."""

    params: dict[str, Any]
    subject: str
    hemis: list[str]
    vertices: dict[str, np.ndarray]  # per hemisphere: the unit's vertices (ascending)
    labels: dict[str, np.ndarray]  # per hemisphere: the region of each of those vertices
    Y: dict[str, np.ndarray]  # per hemisphere: training fMRI (n_train, len(vertices)), float32
    runs: list[folds.Run]
    split: dict
    summary: dict
    design: dict[str, np.ndarray] | None = None
    stores: dict[str, str] = field(default_factory=dict)  # backbone -> feature store
    region_tables: dict[str, str] = field(default_factory=dict)  # hemisphere -> region table
    pretrained: dict[str, str] = field(default_factory=dict)  # run -> pretrained state
    checkpoints: str | None = None  # folder of the runs' checkpoints
    backend: str = "numpy"
    features: list[str] = field(default_factory=list)  # the model's backbone/layer list
    seed: int = 0
    key: str = ""  # the job's rerun key: a checkpoint written under another is never resumed
    loo: bool = True  # decomposition readouts: also write leave-one-out predictions (oof_pred)

    @property
    def n_train(self) -> int:
        return len(self.summary["train_nsd_ids"])

    def checkpoint(self, run: str) -> Path | None:
        return Path(self.checkpoints) / f"{run}.pt" if self.checkpoints else None

    def device(self) -> str:
        return "cuda" if get_backend(self.backend).name == "torch_cuda" else "cpu"

    def run_key(self, run: folds.Run) -> str:
        return f"{self.key}:{run.name}"

    def tables(self) -> dict:
        """The region tables (ROI of every class per vertex) of the job's hemispheres."""
        return {h: load_region_table(path) for h, path in self.region_tables.items()}

    def split_hemispheres(self, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Per-vertex arrays over the hemispheres side by side (lh first), cut per hemisphere."""
        edges = np.cumsum([0] + [self.vertices[h].size for h in self.hemis])
        return {h: {k: v[..., edges[i]:edges[i + 1]] for k, v in arrays.items()} for i, h in enumerate(self.hemis)}

    def run_matrix(self, run: folds.Run) -> np.ndarray:
        """A matrix design's features for a run, as rows of the subject's image list (training images,
        then test images): the ``val`` run's from its fold (scaled and reduced on the fit images),
        every other run's from the ``test`` fold (on every training image). Rows a run cannot use are NaN."""
        fold = fold_arrays(self.design, "val" if run.name == "val" else "test")
        X_fit, X_pred = np.asarray(fold["X_fit"]), np.asarray(fold["X_pred"])
        n_test = len(self.summary["test_nsd_ids"])
        X = np.full((self.n_train + n_test, X_fit.shape[1]), np.nan, np.float32)
        if run.name == "val":
            X[np.asarray(self.split["fit"])] = X_fit
            X[np.asarray(self.split["val"])] = X_pred
        else:
            X[:self.n_train], X[self.n_train:] = X_fit, X_pred
        return X


def unit_vertices(labels: np.ndarray, unit: str) -> np.ndarray:
    """The vertices a unit fits: one region's, or every vertex (``hemisphere``, ``subject``)."""
    if unit in (HEMISPHERE_UNIT, SUBJECT_UNIT):
        return np.arange(labels.size)
    return np.flatnonzero(labels == unit)


def fit_job(spec: dict[str, Any], out, data_root, subject: str, hemi: str, unit: str, regions: list[str],
            summary, split, design=None, stores: dict[str, str] | None = None, targets=None,
            pretrained: dict[str, str] | None = None, checkpoints=None, backend: str = "numpy",
            key: str = "") -> dict[str, Any]:
    """Fit one unit (see the module docstring) and write its npz.

    ``spec``: ``{"readout": name, "class": "module:Class", "params": {...}, "cv_folds": K or None,
    "fold_seed": seed, "features": [...]}`` (the plan's fit spec). ``hemi``: ``lh``, ``rh`` or
    ``both`` (with ``regions`` the region table of each, lh first). ``targets``: the region's
    training fMRI from ``nsdflow targets`` (else read from the data root).
    """
    from ..data.read import load_fmri

    t0 = time.time()
    r = load_readout(spec["class"])
    params = r.normalize(spec.get("params"))
    hemis = ["lh", "rh"] if hemi == "both" else [hemi]
    if len(regions) != len(hemis):
        raise ValueError(f"{len(hemis)} hemispheres need {len(hemis)} region tables, got {len(regions)}")
    summary, split = read_json(summary), read_json(split)
    labels, vertices, Y = {}, {}, {}
    for h, table in zip(hemis, regions):
        all_labels = np.asarray(load_region_labels(table)).astype(str)
        vertices[h] = unit_vertices(all_labels, unit)
        labels[h] = all_labels[vertices[h]]
        if targets is not None:
            # memory-mapped: the page cache's pages, not a fresh copy (read-only: no readout writes to Y)
            Y[h] = np.load(targets, mmap_mode="r")
            if Y[h].shape[1] != vertices[h].size:
                raise ValueError(f"{targets}: {Y[h].shape[1]} vertices, but region {unit} has {vertices[h].size} in "
                                 f"{table}; rerun the targets rule")
        elif vertices[h].size:
            fmri = load_fmri(data_root, subject, h)
            Y[h] = (np.ascontiguousarray(fmri, dtype=np.float32) if vertices[h].size == fmri.shape[1]
                    else read_columns(fmri, vertices[h]))  # the whole hemisphere needs no gather
        else:
            Y[h] = np.zeros((summary["n_train"], 0), np.float32)
    data = FitData(params=params, subject=subject, hemis=hemis, vertices=vertices, labels=labels, Y=Y,
                   runs=folds.runs(split, summary["train_nsd_ids"], spec.get("cv_folds"), spec.get("fold_seed", 0)),
                   split=split, summary=summary, design=open_npz(design) if design else None, stores=stores or {},
                   region_tables=dict(zip(hemis, regions)), pretrained=pretrained or {},
                   checkpoints=str(checkpoints) if checkpoints else None, backend=backend,
                   features=list(spec.get("features") or []), seed=int(spec.get("fold_seed", 0)), key=key,
                   loo=bool(spec.get("loo", True)))
    n_vertices = sum(v.size for v in vertices.values())
    if n_vertices == 0:
        results = {h: {"val_pred": np.zeros((len(split["val"]), 0), np.float32),
                       "test_pred": np.zeros((len(summary["test_nsd_ids"]), 0), np.float32)} for h in hemis}
        log.info("%s %s %s: region absent here, nothing to fit", subject, hemi, unit)
    else:
        results = r.fit(data)
    arrays: dict[str, np.ndarray] = {}
    for h in hemis:
        prefix = f"{h}." if hemi == "both" else ""
        arrays[f"{prefix}vertices"] = vertices[h]
        arrays.update({f"{prefix}{k}": v for k, v in results[h].items()})
    save_npz(out, **arrays)
    if data.checkpoints:  # the fit is written: its resumable state is not needed any more
        for path in Path(data.checkpoints).glob("*.pt"):
            path.unlink()
    log.info("%s %s %s (%s): %d vertices fitted in %.2f s", subject, hemi, unit, spec["readout"], n_vertices,
             time.time() - t0)
    return {"n_vertices": int(n_vertices)}


# ----------------------------------------------------------------------------- readouts of a design


def _run_arrays(design: dict, run: folds.Run, r: Readout) -> tuple[dict, np.ndarray | None, int]:
    """A run's design arrays, the rows of Y it fits on (None: all) and how many held-out rows
    lead its predictions (then the test images)."""
    if run.name in ("val", "test"):
        return fold_arrays(design, run.name), (np.asarray(design["fit_rows"]) if run.name == "val" else None), \
            (len(run.held_out) if run.name == "val" else 0)
    if r.design != "matrix":
        raise ValueError(f"readout {r.name!r} takes no cv_folds (its out-of-fold predictions come with every fit)")
    # A fold of the training images, from the design's all-training-images arrays (its feature
    # scaling and PCA saw the fold's images, never their responses).
    test = fold_arrays(design, "test")
    X = np.asarray(test["X_fit"])
    prepared = {"X_fit": X[run.train], "X_pred": np.concatenate([X[run.held_out], np.asarray(test["X_pred"])])}
    return prepared, run.train, len(run.held_out)


def fit_design(r: Readout, data: FitData) -> dict[str, dict[str, np.ndarray]]:
    """Fit a design readout's runs: every region of the unit at once where the readout is
    separable (ridge: one alpha per vertex), else one model per region; ridge and pca_linear add
    their exact leave-one-out predictions of every training image as ``oof_pred``."""
    (h,) = data.hemis  # design readouts fit one hemisphere (or one region of it) per job
    Y, labels, design = data.Y[h], data.labels[h], data.design
    regions = list(dict.fromkeys(labels.tolist()))
    xp = get_backend(data.backend)
    preds: dict[str, dict[str, np.ndarray]] = {}
    infos: dict[str, dict[str, np.ndarray]] = {}
    # decomposition readouts: the test fit's U'Y also gives every training image's leave-one-out prediction
    oof = np.empty(Y.shape, np.float32) if r.design == "decomposition" and data.loo else None
    for run in data.runs:
        prepared, rows, n_held = _run_arrays(design, run, r)
        loo = oof is not None and run.name == "test"
        if r.separable:
            pred, info = r.fit_predict(prepared, Y, data.params, xp, rows=rows, **({"loo_out": oof} if loo else {}))
        else:
            n_pred = len(prepared["X_pred"] if "X_pred" in prepared else prepared["P"])  # matrix or decomposition
            pred, info = np.empty((n_pred, labels.size), np.float32), {}
            for region in regions:
                cols = np.flatnonzero(labels == region)
                part = np.empty((Y.shape[0], cols.size), np.float32) if loo else None
                p, inf = r.fit_predict(prepared, np.take(Y, cols, axis=1), data.params, xp, rows=rows,
                                       **({"loo_out": part} if loo else {}))
                pred[:, cols] = p
                if loo:
                    oof[:, cols] = part
                for key, value in inf.items():
                    info.setdefault(key, np.full(labels.size, np.nan))[cols] = value
        if run.name == "val":
            preds[run.name] = {"held_out": pred}
        elif run.name == "test":
            preds[run.name] = {"test": pred}
        else:
            preds[run.name] = {"held_out": pred[:n_held], "test": pred[n_held:]}
        infos[run.name] = info
    out = folds.assemble(data.runs, preds, data.split, data.n_train)
    for run, info in infos.items():
        if run in ("val", "test"):
            out.update({f"{run}.{k}": v for k, v in info.items()})
    if oof is not None:
        out["oof_pred"] = oof
    return {h: out}
