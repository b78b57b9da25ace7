"""Rule ``pretrain``: a readout pretrained on every subject, once per run, before each subject's fit.

FBNET (:mod:`.bottleneck`) pretrains one network on the pooled images of all subjects, then fits
each subject starting from it. For a subject's run, the pretrained network must not have seen the
images that run predicts, in any subject (NSD shows some images to several subjects): the
pretraining of run ``val`` leaves out every subject's validation images, that of fold ``k<i>``
the images of fold i (folds are by NSD id, the same for every subject: :mod:`.folds`), and that of
run ``test`` every subject's test images (where another subject trained on one).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..io import open_npz, read_json
from . import folds
from .designs import fold_arrays
from .params import load_readout

log = logging.getLogger(__name__)


def held_out_ids(run: str, summaries: dict[str, dict], splits: dict[str, dict]) -> set[int]:
    """The NSD ids no subject's pretraining may use for ``run`` (see the module docstring)."""
    if run == "val":
        return {int(s["train_nsd_ids"][i]) for name, s in summaries.items() for i in splits[name]["val"]}
    if run == "test":
        return {int(i) for s in summaries.values() for i in s["test_nsd_ids"]}
    return set()  # a fold: its images are outside every subject's training rows of that run already


def pretrain_run(spec: dict[str, Any], run: str, designs: dict[str, str], data_root, summaries: dict[str, str],
                 splits: dict[str, str], out, checkpoint=None, backend: str = "numpy", key: str = "") -> None:
    """Pretrain ``spec``'s readout for ``run`` on every subject's training rows of that run."""
    from ..data.read import load_fmri
    from .backend import get_backend
    from .training import save_checkpoint

    r = load_readout(spec["class"])
    params = r.normalize(spec.get("params"))
    summaries = {s: read_json(p) for s, p in summaries.items()}
    splits = {s: read_json(p) for s, p in splits.items()}
    banned = held_out_ids(run, summaries, splits)
    subjects, exclude = {}, {}
    for subject in sorted(designs):
        summary, split = summaries[subject], splits[subject]
        runs = {x.name: x for x in folds.runs(split, summary["train_nsd_ids"], spec.get("cv_folds"),
                                             spec.get("fold_seed", 0))}
        if run not in runs:
            raise ValueError(f"run {run!r} is not one of {subject}'s runs ({', '.join(runs)})")
        rows = runs[run].train
        fold = fold_arrays(open_npz(designs[subject]), "val" if run == "val" else "test")
        X = np.asarray(fold["X_fit"])  # the run's training rows in order (val: the fit rows; else all)
        ids = np.asarray(summary["train_nsd_ids"])[rows]
        Y = {h: load_fmri(data_root, subject, h) for h in ("lh", "rh")}
        subjects[subject] = (X if run == "val" else X[rows], Y["lh"], Y["rh"], rows)
        exclude[subject] = np.flatnonzero(np.isin(ids, list(banned)))
    device = "cuda" if get_backend(backend).name == "torch_cuda" else "cpu"
    state = r.pretrain(subjects, exclude, params, device, checkpoint, key)
    save_checkpoint(out, state)
    if checkpoint:  # the network is written: its resumable state is not needed any more
        Path(checkpoint).unlink(missing_ok=True)
    log.info("%s: pretrained for run %s on %d subjects (%d images left out)", spec["readout"], run, len(subjects),
             sum(len(e) for e in exclude.values()))
