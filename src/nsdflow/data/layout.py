"""The Algonauts 2023 data layout: paths, file names, ROI classes and the real counts.

Everything that knows *where* a file lives in a data root is in this module, so that
the reader (:mod:`nsdflow.data`), the demo generator (:mod:`nsdflow.demo`) and the
tests agree on one contract::

    ROOT/subjXX/training_split/training_fmri/{lh,rh}_training_fmri.npy
    ROOT/subjXX/training_split/training_images/train-NNNN_nsd-NNNNN.png
    ROOT/subjXX/test_split/test_images/test-NNNN_nsd-NNNNN.png
    ROOT/subjXX/roi_masks/{lh,rh}.<class>_challenge_space.npy
    ROOT/subjXX/roi_masks/{lh,rh}.<class>_fsaverage_space.npy
    ROOT/subjXX/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy
    ROOT/subjXX/roi_masks/mapping_<class>.npy
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HEMISPHERES = ("lh", "rh")
SPLITS = ("train", "test")

#: ROI classes in the order the challenge lists them, with the ROI names of each.
ROI_CLASSES: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
}
UNKNOWN = "Unknown"

#: Number of vertices of one fsaverage hemisphere, and of fsaverage5 (its first vertices).
FSAVERAGE_N_VERTICES = 163_842
FSAVERAGE5_N_VERTICES = 10_242

#: The real Algonauts 2023 counts, subj01..subj08.
REAL_COUNTS: dict[str, dict[str, int]] = {
    f"subj{i:02d}": {"train": tr, "test": te, "lh": lh, "rh": rh}
    for i, tr, te, lh, rh in zip(
        range(1, 9),
        (9841, 9841, 9082, 8779, 9841, 9082, 9841, 8779),
        (159, 159, 293, 395, 159, 293, 159, 395),
        (19004, 19004, 19004, 19004, 19004, 18978, 19004, 18981),
        (20544, 20544, 20544, 20544, 20544, 20220, 20544, 20530),
    )
}

SUBJECT_RE = re.compile(r"^subj(\d{2})$")
IMAGE_RE = re.compile(r"^(train|test)-(\d{4})_nsd-(\d{5})\.png$")
N_NSD_IMAGES = 73_000


def subject_name(subject: int | str) -> str:
    """Normalise ``1``, ``"1"``, ``"01"`` or ``"subj01"`` to ``"subj01"``."""
    if isinstance(subject, str):
        m = SUBJECT_RE.match(subject)
        if m:
            return subject
        if not subject.isdigit():
            raise ValueError(f"not a subject: {subject!r} (expected e.g. 1 or 'subj01')")
        subject = int(subject)
    if not 1 <= int(subject) <= 99:
        raise ValueError(f"subject number out of range: {subject!r}")
    return f"subj{int(subject):02d}"


@dataclass(frozen=True, order=True)
class ImageName:
    """A parsed image file name: ``train-0001_nsd-00012.png``.

    ``index`` is 1-based (the fMRI row is ``index - 1``); ``nsd_id`` is 0-based.
    """

    split: str
    index: int
    nsd_id: int

    @property
    def filename(self) -> str:
        return format_image_name(self.split, self.index, self.nsd_id)


def parse_image_name(name: str) -> ImageName:
    """Parse an Algonauts image file name; raise ``ValueError`` saying what is off."""
    m = IMAGE_RE.match(name)
    if not m:
        raise ValueError(
            f"image file name {name!r} does not match "
            "'train-NNNN_nsd-NNNNN.png' / 'test-NNNN_nsd-NNNNN.png'"
        )
    split, index, nsd_id = m.group(1), int(m.group(2)), int(m.group(3))
    if index < 1:
        raise ValueError(f"image file name {name!r}: the index is 1-based, got {index}")
    if nsd_id >= N_NSD_IMAGES:
        raise ValueError(f"image file name {name!r}: NSD id {nsd_id} is not below {N_NSD_IMAGES}")
    return ImageName(split, index, nsd_id)


def format_image_name(split: str, index: int, nsd_id: int) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 1 <= index <= 9999:
        raise ValueError(f"image index must be in 1..9999, got {index}")
    if not 0 <= nsd_id < N_NSD_IMAGES:
        raise ValueError(f"NSD id must be in 0..{N_NSD_IMAGES - 1}, got {nsd_id}")
    return f"{split}-{index:04d}_nsd-{nsd_id:05d}.png"


class SubjectPaths:
    """Paths of one subject's files in a data root (no I/O)."""

    def __init__(self, root: str | Path, subject: int | str):
        self.root = Path(root)
        self.subject = subject_name(subject)
        self.dir = self.root / self.subject

    def fmri(self, hemi: str) -> Path:
        return self.dir / "training_split" / "training_fmri" / f"{hemi}_training_fmri.npy"

    def images_dir(self, split: str) -> Path:
        if split == "train":
            return self.dir / "training_split" / "training_images"
        if split == "test":
            return self.dir / "test_split" / "test_images"
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    @property
    def roi_dir(self) -> Path:
        return self.dir / "roi_masks"

    def roi_mask(self, hemi: str, roi_class: str, space: str = "challenge") -> Path:
        if space not in ("challenge", "fsaverage"):
            raise ValueError(f"space must be 'challenge' or 'fsaverage', got {space!r}")
        return self.roi_dir / f"{hemi}.{roi_class}_{space}_space.npy"

    def fsaverage_vertices(self, hemi: str) -> Path:
        return self.roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy"

    def mapping(self, roi_class: str) -> Path:
        return self.roi_dir / f"mapping_{roi_class}.npy"


class WithheldPaths:
    """Paths of what the real challenge withholds (test fMRI, noise ceilings).

    The demo generator writes them beside its public layout; for real data a user can
    point ``data.withheld`` at noise ceilings of their own::

        WITHHELD/subjXX/{lh,rh}_test_fmri.npy        float32 (n_test, n_vertices)
        WITHHELD/subjXX/{lh,rh}_noise_ceiling.npy    per-vertex noise ceiling (fraction or percent)
        WITHHELD/subjXX/{lh,rh}_test_signal.npy      noiseless ground truth (demo only)
        WITHHELD/subjXX/{lh,rh}_prf.npy              each vertex's hidden receptive field (demo only):
                                                     x, y (image half-widths, +x right, +y down), size
    """

    def __init__(self, root: str | Path, subject: int | str):
        self.root = Path(root)
        self.subject = subject_name(subject)
        self.dir = self.root / self.subject

    def test_fmri(self, hemi: str) -> Path:
        return self.dir / f"{hemi}_test_fmri.npy"

    def noise_ceiling(self, hemi: str) -> Path:
        return self.dir / f"{hemi}_noise_ceiling.npy"

    def test_signal(self, hemi: str) -> Path:
        return self.dir / f"{hemi}_test_signal.npy"

    def prf(self, hemi: str) -> Path:
        return self.dir / f"{hemi}_prf.npy"
