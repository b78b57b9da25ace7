"""Validate one subject of a data root against the Algonauts layout, listing every problem at once.

The reader never trusts a file: each check that fails adds a :class:`~nsdflow.data.read.Problem`
naming the file and what is wrong, and :func:`validate_subject` raises one
:class:`~nsdflow.data.read.DataError` listing them all, so that a researcher fixes a broken root
in one pass instead of one error per run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layout import (
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    ROI_CLASSES,
    SPLITS,
    UNKNOWN,
    ImageName,
    SubjectPaths,
    subject_name,
)
from .read import (
    DataError,
    Problem,
    _short,
    image_path,
    list_images,
    load_fmri,
    load_fsaverage_vertices,
    load_roi_labels,
    load_roi_mapping,
    open_png,
)

log = logging.getLogger(__name__)


def verify_images(paths: list[Path]) -> list[Problem]:
    """Check that each file is a complete, uncorrupted PNG of a sane size, without decoding it.

    PIL's ``verify`` walks the PNG chunks and their checksums: a truncated or corrupted file
    fails, at thousands of images per second. Content that is not PNG (a JPEG renamed ``.png``)
    and images declaring more than :data:`~nsdflow.data.read.MAX_IMAGE_PIXELS` pixels fail too
    (:func:`~nsdflow.data.read.open_png`). Grayscale, palette and RGBA images pass (the image
    cache converts them to RGB).
    """
    from PIL import UnidentifiedImageError

    problems = []
    for path in paths:
        try:
            with open_png(path) as im:
                im.verify()
        except DataError as err:
            problems += err.problems
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            reason = "not an image file" if isinstance(err, UnidentifiedImageError) else f"{type(err).__name__}: {err}"
            problems.append(Problem(path, f"corrupt or truncated image ({reason}); re-copy it from the original download"))
    return problems


@dataclass
class SubjectSummary:
    """What :func:`validate_subject` found: counts and NSD ids, ready to write as JSON."""

    subject: str
    n_train: int
    n_test: int
    n_vertices: dict[str, int]
    train_nsd_ids: list[int]
    test_nsd_ids: list[int]
    roi_classes: list[str]
    rois: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # hemi -> class -> names present
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def validate_subject(
    root: str | Path,
    subject: int | str,
    roi_classes: list[str] | tuple[str, ...] = tuple(ROI_CLASSES),
    check_finite: bool = True,
    check_images: bool = False,
) -> SubjectSummary:
    """Check one subject of a data root against the Algonauts layout.

    Parameters
    ----------
    root : path
        The data root (the folder holding ``subjXX/``).
    subject : int or str
        ``1`` or ``"subj01"``.
    roi_classes : sequence of str
        ROI classes whose masks and mappings must be present.
    check_finite : bool
        Scan the fMRI for NaN or inf (streams the array; a few seconds per hemisphere at real size).
    check_images : bool
        Verify every PNG's structure and checksums (no decoding; thousands of images per second), so
        that a corrupt or truncated file is named now rather than when the image cache reaches it.

    Returns
    -------
    SubjectSummary

    Raises
    ------
    DataError
        Listing every problem found, each with its file.
    """
    root = Path(root)
    subject = subject_name(subject)
    paths = SubjectPaths(root, subject)
    if not root.is_dir():
        raise DataError(Problem(root, "data root does not exist or is not a folder"))
    if not paths.dir.is_dir():
        present = [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("subj")]
        raise DataError(Problem(paths.dir, f"subject folder is missing (present: {', '.join(sorted(present)) or 'none'})"))

    problems: list[Problem] = []
    warnings: list[str] = []
    # A whole missing folder is one problem, not one per file it should hold.
    folders = {
        paths.images_dir("train").parent: "training_split/ (training_images/ and training_fmri/)",
        paths.images_dir("test").parent: "test_split/ (test_images/)",
        paths.fmri("lh").parent: "training_fmri/ ({lh,rh}_training_fmri.npy)",
        paths.roi_dir: "roi_masks/ (ROI masks and mapping_<class>.npy files)",
    }
    absent = set()
    for folder, what in folders.items():
        if not folder.is_dir() and not any(folder.is_relative_to(a) for a in absent):
            problems.append(Problem(folder, f"folder is missing: the subject needs {what}; is the download complete?"))
            absent.add(folder)

    def missing(path: Path) -> bool:
        return any(path.is_relative_to(a) for a in absent)

    images: dict[str, list[ImageName]] = {}
    for split in SPLITS:
        images[split] = []
        if missing(paths.images_dir(split)):
            continue
        try:
            images[split] = list_images(root, subject, split)
        except DataError as err:
            problems += err.problems
        if check_images and images[split]:
            problems += verify_images([image_path(root, subject, i) for i in images[split]])

    n_vertices: dict[str, int] = {}
    for hemi in HEMISPHERES:
        path = paths.fmri(hemi)
        if missing(path):
            continue
        try:
            fmri = load_fmri(root, subject, hemi)
        except DataError as err:
            problems += err.problems
            continue
        if fmri.ndim != 2:
            problems.append(Problem(path, f"fMRI must be 2-D (images x vertices), has shape {fmri.shape}"))
            continue
        if fmri.dtype != np.float32:
            problems.append(Problem(path, f"fMRI must be float32, is {fmri.dtype}"))
        n_vertices[hemi] = fmri.shape[1]
        if images["train"] and fmri.shape[0] != len(images["train"]):
            problems.append(
                Problem(path, f"has {fmri.shape[0]} rows but there are {len(images['train'])} training images")
            )
        if check_finite and np.issubdtype(fmri.dtype, np.floating):
            bad = _nonfinite_columns(fmri)
            if bad.size:
                problems.append(
                    Problem(path, f"NaN or inf in {bad.size} vertices (columns {_short(bad.tolist())}); "
                                  "drop those columns from the fMRI and the same entries from every "
                                  "challenge-space mask (the organisers did so for subj06 and subj08), "
                                  "or set data.check_finite: false to go on")
                )

    rois: dict[str, dict[str, list[str]]] = {h: {} for h in HEMISPHERES}
    for roi_class in roi_classes if not missing(paths.roi_dir) else ():
        try:
            mapping = load_roi_mapping(root, subject, roi_class)
        except DataError as err:
            problems += err.problems
            continue
        if mapping.get(0) != UNKNOWN:
            problems.append(Problem(paths.mapping(roi_class), f"label 0 must be {UNKNOWN!r}, is {mapping.get(0)!r}"))
        for hemi in HEMISPHERES:
            _check_masks(paths, hemi, roi_class, mapping, n_vertices.get(hemi), problems, rois)

    for hemi in HEMISPHERES if not missing(paths.roi_dir) else ():
        path = paths.fsaverage_vertices(hemi)
        try:
            verts = load_fsaverage_vertices(root, subject, hemi)
        except DataError as err:
            problems += err.problems
            continue
        if hemi in n_vertices and verts.size != n_vertices[hemi]:
            problems.append(
                Problem(path, f"marks {verts.size} fsaverage vertices but the fMRI has {n_vertices[hemi]} columns")
            )

    if problems:
        raise DataError(problems)
    return SubjectSummary(
        subject=subject,
        n_train=len(images["train"]),
        n_test=len(images["test"]),
        n_vertices=n_vertices,
        train_nsd_ids=[i.nsd_id for i in images["train"]],
        test_nsd_ids=[i.nsd_id for i in images["test"]],
        roi_classes=list(roi_classes),
        rois=rois,
        warnings=warnings,
    )


def _check_masks(paths, hemi, roi_class, mapping, n_vert, problems, rois) -> None:
    challenge = paths.roi_mask(hemi, roi_class, "challenge")
    fsavg = paths.roi_mask(hemi, roi_class, "fsaverage")
    try:
        labels = load_roi_labels(paths.root, paths.subject, hemi, roi_class, "challenge")
    except DataError as err:
        problems += err.problems
        return
    if n_vert is not None and labels.size != n_vert:
        problems.append(Problem(challenge, f"has {labels.size} vertices but the fMRI has {n_vert} columns"))
    unknown = sorted(set(np.unique(labels).tolist()) - set(mapping))
    if unknown:
        problems.append(Problem(challenge, f"labels {unknown} are not in {paths.mapping(roi_class).name}"))
    present = sorted(set(np.unique(labels).tolist()) - {0})
    rois[hemi][roi_class] = [mapping[i] for i in present if i in mapping]
    try:
        fs_labels = load_roi_labels(paths.root, paths.subject, hemi, roi_class, "fsaverage")
    except DataError as err:
        problems += err.problems
        return
    if fs_labels.size != FSAVERAGE_N_VERTICES:
        problems.append(Problem(fsavg, f"expected {FSAVERAGE_N_VERTICES} fsaverage vertices, got {fs_labels.size}"))


def _nonfinite_columns(arr: np.ndarray, block_rows: int = 256) -> np.ndarray:
    """Columns holding NaN or inf, streaming the rows so memory stays bounded."""
    bad = np.zeros(arr.shape[1], dtype=bool)
    for start in range(0, arr.shape[0], block_rows):
        bad |= ~np.isfinite(np.asarray(arr[start : start + block_rows])).all(axis=0)
    return np.flatnonzero(bad)
