"""Read an Algonauts 2023 data root and validate it against the contract in :mod:`nsdflow.layout`.

The reader never trusts a file: each check that fails adds a :class:`Problem` naming the file
and what is wrong, and :func:`validate_subject` raises one :class:`DataError` listing them all,
so that a researcher fixes a broken root in one pass instead of one error per run.
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
    SUBJECT_RE,
    UNKNOWN,
    ImageName,
    SubjectPaths,
    WithheldPaths,
    parse_image_name,
    subject_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data root: the file (or folder) and what is wrong with it."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DataError(ValueError):
    """A data root does not follow the Algonauts layout; ``problems`` lists every issue found."""

    def __init__(self, problems: list[Problem] | Problem | str, path: Path | None = None):
        if isinstance(problems, str):
            problems = [Problem(Path(path or "."), problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} with the data:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------- images


def list_images(root: str | Path, subject: int | str, split: str) -> list[ImageName]:
    """The images of one split in fMRI row order (sorted file names), checked.

    Raises :class:`DataError` if a name is off the pattern, an index repeats or is
    missing, or an NSD id appears twice.
    """
    paths = SubjectPaths(root, subject)
    folder = paths.images_dir(split)
    if not folder.is_dir():
        raise DataError(Problem(folder, f"{split} image folder is missing"))
    problems: list[Problem] = []
    names: list[ImageName] = []
    for entry in sorted(p.name for p in folder.iterdir()):
        if entry.startswith("."):
            continue
        try:
            parsed = parse_image_name(entry)
        except ValueError as err:
            problems.append(Problem(folder / entry, str(err)))
            continue
        if parsed.split != split:
            problems.append(Problem(folder / entry, f"a {parsed.split} image in the {split} folder"))
            continue
        names.append(parsed)
    if not names and not problems:
        problems.append(Problem(folder, f"no {split} images (expected {split}-NNNN_nsd-NNNNN.png files)"))
    # Sorted file names are the fMRI row order; the 1-based indices must be exactly 1..n.
    indices = [n.index for n in names]
    seen: dict[int, int] = {}
    for n in names:
        seen[n.index] = seen.get(n.index, 0) + 1
    dups = sorted(i for i, c in seen.items() if c > 1)
    if dups:
        problems.append(Problem(folder, f"image index repeated: {_short(dups)}"))
    if indices:
        missing = sorted(set(range(1, max(indices) + 1)) - set(indices))
        if missing:
            problems.append(Problem(folder, f"image index missing (indices must run 1..N): {_short(missing)}"))
    nsd_seen: dict[int, int] = {}
    for n in names:
        nsd_seen[n.nsd_id] = nsd_seen.get(n.nsd_id, 0) + 1
    nsd_dups = sorted(i for i, c in nsd_seen.items() if c > 1)
    if nsd_dups:
        problems.append(Problem(folder, f"NSD id appears more than once: {_short(nsd_dups)}"))
    if problems:
        raise DataError(problems)
    return names


def image_path(root: str | Path, subject: int | str, image: ImageName) -> Path:
    return SubjectPaths(root, subject).images_dir(image.split) / image.filename


def verify_images(paths: list[Path]) -> list[Problem]:
    """Check that each file is a complete, uncorrupted image, without decoding it.

    PIL's ``verify`` walks the PNG chunks and their checksums: a truncated or corrupted file
    fails, at thousands of images per second. Grayscale, palette and RGBA images pass (the image
    cache converts them to RGB).
    """
    from PIL import Image, UnidentifiedImageError

    problems = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            reason = "not an image file" if isinstance(err, UnidentifiedImageError) else f"{type(err).__name__}: {err}"
            problems.append(Problem(path, f"corrupt or truncated image ({reason}); re-copy it from the original download"))
    return problems


# ----------------------------------------------------------------------------- arrays


def load_fmri(root: str | Path, subject: int | str, hemi: str, mmap: bool = True) -> np.ndarray:
    """The training fMRI of one hemisphere, (n_train, n_vertices) float32, memory-mapped by default."""
    path = SubjectPaths(root, subject).fmri(hemi)
    return _load_npy(path, mmap=mmap)


def load_roi_mapping(root: str | Path, subject: int | str, roi_class: str) -> dict[int, str]:
    """The ``{label: name}`` dict of one ROI class (0 is 'Unknown')."""
    path = SubjectPaths(root, subject).mapping(roi_class)
    if not path.is_file():
        raise DataError(Problem(path, f"mapping file of ROI class {roi_class!r} is missing"))
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is reported as a data problem
        raise DataError(Problem(path, f"cannot read the mapping ({type(err).__name__}: {err})")) from err
    mapping = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(mapping, dict):
        got = f"an array of shape {obj.shape}" if isinstance(obj, np.ndarray) else type(mapping).__name__
        raise DataError(Problem(path, f"expected a pickled dict {{int: name}} (np.save of a dict), got {got}"))
    return {int(k): str(v) for k, v in mapping.items()}


def load_roi_labels(
    root: str | Path, subject: int | str, hemi: str, roi_class: str, space: str = "challenge"
) -> np.ndarray:
    """Integer ROI label per vertex of one class, in challenge (fMRI column) or fsaverage space."""
    path = SubjectPaths(root, subject).roi_mask(hemi, roi_class, space)
    arr = _load_npy(path, mmap=False)
    if arr.ndim != 1:
        raise DataError(Problem(path, f"ROI mask must be 1-D, has shape {arr.shape}"))
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(Problem(path, f"ROI mask must be numeric, has dtype {arr.dtype}"))
    return np.rint(arr).astype(np.int64)


def load_fsaverage_vertices(root: str | Path, subject: int | str, hemi: str) -> np.ndarray:
    """Indices (ascending) of the fsaverage vertices that are this hemisphere's challenge vertices."""
    path = SubjectPaths(root, subject).fsaverage_vertices(hemi)
    arr = _load_npy(path, mmap=False)
    if arr.shape != (FSAVERAGE_N_VERTICES,):
        raise DataError(Problem(path, f"expected shape ({FSAVERAGE_N_VERTICES},), got {arr.shape}"))
    return np.flatnonzero(arr)


def load_withheld(root: str | Path, subject: int | str, hemi: str, what: str) -> np.ndarray | None:
    """A withheld array (``test_fmri``, ``noise_ceiling`` or ``test_signal``), or None if absent."""
    path = getattr(WithheldPaths(root, subject), what)(hemi)
    if not path.is_file():
        return None
    return _load_npy(path, mmap=False)


def roi_membership(
    root: str | Path, subject: int | str, hemi: str, roi_class: str
) -> tuple[np.ndarray, dict[int, str]]:
    """Labels of one class at the challenge vertices, checked against the mapping."""
    labels = load_roi_labels(root, subject, hemi, roi_class, "challenge")
    mapping = load_roi_mapping(root, subject, roi_class)
    unknown_labels = sorted(set(np.unique(labels).tolist()) - set(mapping))
    if unknown_labels:
        path = SubjectPaths(root, subject).roi_mask(hemi, roi_class)
        raise DataError(
            Problem(path, f"labels {unknown_labels} are not in {SubjectPaths(root, subject).mapping(roi_class).name}")
        )
    return labels, mapping


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(Problem(path, "file is missing"))
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise DataError(Problem(path, f"not a readable .npy array ({type(err).__name__}: {err})")) from err


def _short(values: list, limit: int = 10) -> str:
    head = ", ".join(str(v) for v in values[:limit])
    return head + (f", ... ({len(values)} in all)" if len(values) > limit else "")


# ----------------------------------------------------------------------------- validation


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


def list_subjects(root: str | Path) -> list[str]:
    """The ``subjXX`` folders of a data root, sorted.

    Raises :class:`DataError` when there are none, with a hint when ``root`` looks like a subject
    folder or like the parent of the data root (the two usual slips).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(Problem(root, "data root does not exist or is not a folder"))
    entries = [p for p in root.iterdir() if p.is_dir()]
    subjects = sorted(p.name for p in entries if SUBJECT_RE.match(p.name))
    if subjects:
        return subjects
    if (root / "training_split").is_dir() or (root / "roi_masks").is_dir():
        hint = f"it looks like one subject's folder: point at its parent, {root.parent}"
    else:
        inner = [p for p in entries if any(SUBJECT_RE.match(q.name) for q in p.iterdir() if q.is_dir())]
        near = sorted(p.name for p in entries if p.name.lower().startswith("subj"))
        if inner:
            hint = f"the subject folders are one level down: point at {inner[0]}"
        elif near:
            hint = f"found {', '.join(near[:4])}: subject folders are named subj01 ... subj08 (two digits)"
        else:
            hint = "expected the Algonauts 2023 data root, the folder holding subj01/ ... subj08/"
    raise DataError(Problem(root, f"no subjXX folders in the data root; {hint}"))


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
