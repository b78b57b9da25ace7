"""Read an Algonauts 2023 data root (the layout of :mod:`nsdflow.data.layout`), trusting no file.

Every reader names the file it failed on: a :class:`DataError` holds one :class:`Problem` per
file and what is wrong with it. :mod:`nsdflow.data.validate` checks a whole subject with these
readers and lists every problem at once.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .layout import (
    FSAVERAGE_N_VERTICES,
    SUBJECT_RE,
    ImageName,
    SubjectPaths,
    WithheldPaths,
    parse_image_name,
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


#: The most pixels an image may declare: 4096 x 4096, about 90 times NSD's 425 x 425 (50 MB as RGB).
#: PIL's own guard stops only above 179 million pixels (0.5 GB each), and with a traceback.
MAX_IMAGE_PIXELS = 4096 * 4096


@contextlib.contextmanager
def open_png(path: str | Path) -> Iterator:
    """Open an image of the data root with PIL, checking its header before any pixel is decoded.

    Raises :class:`DataError` naming the file if its content is not PNG (whatever its name) or
    it declares more than :data:`MAX_IMAGE_PIXELS` pixels (a decompression bomb: a small file
    that would decode to gigabytes). Unreadable files raise PIL's own errors.
    """
    from PIL import Image

    path = Path(path)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as err:  # PIL's guard, far above ours: it names only the pixel count
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        raise DataError(Problem(path, _too_large(f"it declares {int(pixels[1]):,} pixels" if pixels else str(err)))) \
            from None
    with im:
        if im.format != "PNG":
            raise DataError(Problem(path, f"holds {im.format} content, not PNG: the layout's images are PNG files "
                                          "(lossless); re-copy it from the original download"))
        width, height = im.size
        if width * height > MAX_IMAGE_PIXELS:
            raise DataError(Problem(path, _too_large(f"it declares {width} x {height} pixels")))
        yield im


def _too_large(what: str) -> str:
    return (f"image too large: {what}, over the limit of 4096 x 4096 (NSD's images are 425 x 425); a "
            "decompression bomb or not a stimulus image: re-copy it from the original download")


def image_path(root: str | Path, subject: int | str, image: ImageName) -> Path:
    return SubjectPaths(root, subject).images_dir(image.split) / image.filename


# ----------------------------------------------------------------------------- arrays


def load_fmri(root: str | Path, subject: int | str, hemi: str, mmap: bool = True) -> np.ndarray:
    """The training fMRI of one hemisphere, (n_train, n_vertices) float32, memory-mapped by default."""
    path = SubjectPaths(root, subject).fmri(hemi)
    return _load_npy(path, mmap=mmap)


def load_roi_mapping(root: str | Path, subject: int | str, roi_class: str) -> dict[int, str]:
    """The ``{label: name}`` dict of one ROI class (0 is 'Unknown').

    The file is a pickle (``np.save`` of a dict), and unpickling runs whatever callables the
    pickle names: it is read by :func:`read_mapping_file`, which admits only what a mapping holds.
    """
    path = SubjectPaths(root, subject).mapping(roi_class)
    if not path.is_file():
        raise DataError(Problem(path, f"mapping file of ROI class {roi_class!r} is missing"))
    return read_mapping_file(path)


def read_mapping_file(path: Path) -> dict[int, str]:
    """A ``{label: name}`` dict from an ``np.save``-d dict, unpickled by :class:`MappingUnpickler`.

    Raises :class:`DataError` naming the file if it is not a 0-d object array holding a dict of
    integer labels to names, and, before anything in it runs, if its pickle names any callable
    but numpy's own array and scalar reconstruction.
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} (np.save writes 1.0)")
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(f)
            if dtype.hasobject and shape == ():
                obj = MappingUnpickler(f).load()
    except RefusedPickle as err:
        raise DataError(Problem(path, f"refused: its pickle calls {err}, which a mapping never holds (a genuine "
                                      "mapping_<class>.npy is a dict of integer labels to ROI names); loading it "
                                      "would run that code. Do not use this file: download it again from the "
                                      "original source")) from None
    except Exception as err:  # noqa: BLE001 - any failure to read is reported as a data problem
        raise DataError(Problem(path, f"cannot read the mapping ({type(err).__name__}: {err})")) from err
    if not (dtype.hasobject and shape == ()):
        raise DataError(Problem(path, f"expected a pickled dict {{int: name}} (np.save of a dict), got an array of "
                                      f"shape {shape}"))
    mapping = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(mapping, dict):
        raise DataError(Problem(path, f"expected a pickled dict {{int: name}} (np.save of a dict), got "
                                      f"{type(mapping).__name__}"))
    out: dict[int, str] = {}
    for key, name in mapping.items():
        label = _integer_label(key)
        if label is None:
            raise DataError(Problem(path, f"key {key!r} is not an integer label: a mapping is a dict "
                                          "{integer label: ROI name}"))
        if not isinstance(name, str):
            raise DataError(Problem(path, f"label {label} maps to {name!r}, not to an ROI name (a string)"))
        out[label] = str(name)
    return out


def _integer_label(key) -> int | None:
    """``key`` as an int if it is an integer (numpy's included, or a float of integral value), else None."""
    if isinstance(key, (bool, np.bool_)):
        return None
    if isinstance(key, (int, np.integer)):
        return int(key)
    if isinstance(key, (float, np.floating)) and float(key).is_integer():
        return int(key)
    return None


class RefusedPickle(pickle.UnpicklingError):
    """A pickle names a callable that :class:`MappingUnpickler` does not admit (the message names it)."""


def _numpy_scalar(dtype, *args):
    """numpy's scalar reconstruction, for the scalar types a mapping's keys and names may have."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iufU":
        raise RefusedPickle(f"numpy scalar reconstruction of dtype {dtype!r}")
    return _SCALAR(dtype, *args)


def _numpy_array(subtype, *args):
    """numpy's array reconstruction, of plain ndarrays only (a subclass's __setstate__ could run code)."""
    if subtype is not np.ndarray:
        raise RefusedPickle(f"numpy array reconstruction of {subtype!r}")
    return _RECONSTRUCT(subtype, *args)


# numpy's reconstruction functions, whichever module (numpy.core or numpy._core) holds them.
_RECONSTRUCT = np.zeros(()).__reduce__()[0]
_SCALAR = np.int64(0).__reduce__()[0]
_ADMITTED = {
    **{(module, "_reconstruct"): _numpy_array for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _numpy_scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class MappingUnpickler(pickle.Unpickler):
    """Unpickles what ``np.save(path, np.array(a_dict, dtype=object), allow_pickle=True)`` writes.

    A pickle can only call what it names as a global, and every global goes through
    :meth:`find_class`, which admits numpy's array, dtype and scalar reconstruction (of plain
    arrays and of integer, float and string scalars) and refuses anything else, so that no other
    code runs; dicts, lists, ints and strings need no global.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None


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
