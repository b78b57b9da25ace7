"""The challenge submission: assemble the zip and check it the way the leaderboard would.

Layout of the zip (no parent folder)::

    subj01/lh_pred_test.npy   float32 (n_test_images, n_lh_vertices), rows in sorted test-image order
    subj01/rh_pred_test.npy
    ...
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.layout import HEMISPHERES, REAL_COUNTS
from ..data.read import DataError, list_images, list_subjects, load_fmri
from ..io import atomic_path

MAX_BYTES = 300 * 1024 * 1024
ENTRY_RE = re.compile(r"^(subj\d{2})/([lr]h)_pred_test\.npy$")


def entry_name(subject: str, hemi: str) -> str:
    return f"{subject}/{hemi}_pred_test.npy"


def assemble_submission(predictions: dict[tuple[str, str], np.ndarray], out: str | Path) -> None:
    """Write ``{(subject, hemi): (n_test, n_vertices) array}`` as a submission zip (float32)."""
    with atomic_path(out, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for (subject, hemi), arr in sorted(predictions.items()):
                arr = np.asarray(arr)
                if not np.isfinite(arr).all():
                    raise ValueError(f"{subject} {hemi}: predictions hold NaN or inf")
                buf = io.BytesIO()
                np.save(buf, arr.astype(np.float32), allow_pickle=False)
                zf.writestr(entry_name(subject, hemi), buf.getvalue())


@dataclass
class SubmissionReport:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        lines = [f"error: {e}" for e in self.errors] + [f"note: {n}" for n in self.notes]
        lines.append("submission OK" if self.ok else f"submission REJECTED ({len(self.errors)} errors)")
        return "\n".join(lines)


def expected_shapes(data_root: str | Path) -> dict[str, dict[str, tuple[int, int]]]:
    """``{subject: {hemi: (n_test, n_vertices)}}`` read from a data root (fMRI headers only)."""
    shapes: dict[str, dict[str, tuple[int, int]]] = {}
    for subject in list_subjects(data_root):
        n_test = len(list_images(data_root, subject, "test"))
        shapes[subject] = {hemi: (n_test, int(load_fmri(data_root, subject, hemi).shape[1])) for hemi in HEMISPHERES}
    return shapes


def check_submission(zip_path: str | Path, data_root: str | Path) -> SubmissionReport:
    """Check a submission zip against a data root; every problem is reported, not just the first.

    What the leaderboard required: ``subjXX/`` folders at the root of the zip, both
    ``{lh,rh}_pred_test.npy`` for every subject, float32 arrays of shape (test images,
    vertices) of that subject and hemisphere, every value finite, and a zip under 300 MB.
    Only the subjects of ``data_root`` are required (a partial download gives a partial
    submission, which is noted, not rejected); a subject of the data root absent from the zip
    is an error. Each kind of problem has its own message, naming the entry.
    """
    zip_path = Path(zip_path)
    report = SubmissionReport()
    if not zip_path.is_file():
        report.errors.append(f"{zip_path}: no such file")
        return report
    size = zip_path.stat().st_size
    if size > MAX_BYTES:
        report.errors.append(f"{zip_path}: {size / 2**20:.1f} MB, over the 300 MB limit of the leaderboard; "
                             "zip with compression (the pipeline's zip uses deflate) or drop stray files")
    try:
        expected = expected_shapes(data_root)
    except DataError as err:
        report.errors.append(f"cannot read the data root to know the expected shapes:\n{err}")
        return report
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        report.errors.append(f"{zip_path}: not a zip file ({err})")
        return report
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        doubled = sorted({n for n in names if names.count(n) > 1})
        for name in doubled:
            report.errors.append(f"{name}: appears {names.count(name)} times in the zip; keep one")
        found: dict[tuple[str, str], str] = {}
        strays = []
        for name in names:
            m = ENTRY_RE.match(name)
            if m:
                found[(m.group(1), m.group(2))] = name
            else:
                strays.append(name)
        nested = [n for n in strays if re.search(r"(^|/)subj\d{2}/[lr]h_pred_test\.npy$", n)]
        if nested:
            top = nested[0].split("/")[0]
            report.errors.append(f"files are inside a parent folder ({top}/...); zip the subjXX folders themselves, "
                                 "so that subj01/lh_pred_test.npy is at the root of the zip")
        others = [n for n in strays if n not in nested]
        if others:
            report.notes.append(f"ignored files (not subjXX/{{lh,rh}}_pred_test.npy): {', '.join(others[:10])}"
                                + (f" and {len(others) - 10} more" if len(others) > 10 else ""))
        uncompressed = 0
        for subject in sorted(expected):
            have = [h for h in HEMISPHERES if (subject, h) in found]
            if not have and not nested:
                report.errors.append(f"{subject}: missing from the zip; the data root has it, so both "
                                     f"{entry_name(subject, 'lh')} and {entry_name(subject, 'rh')} are required")
                continue
            for hemi in HEMISPHERES:
                want = expected[subject][hemi]
                name = entry_name(subject, hemi)
                if (subject, hemi) not in found:
                    if not nested:
                        report.errors.append(f"{name}: missing ({subject} has {'the other hemisphere' if have else 'no file'})")
                    continue
                uncompressed += zf.getinfo(name).file_size
                try:
                    arr = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
                except Exception as err:  # noqa: BLE001 - any unreadable entry is one error
                    report.errors.append(f"{name}: not a readable .npy array ({type(err).__name__}: {err})")
                    continue
                if arr.dtype != np.float32:
                    report.errors.append(f"{name}: dtype {arr.dtype}, must be float32")
                if arr.shape != want:
                    hint = " (transposed?)" if arr.shape == want[::-1] else ""
                    report.errors.append(f"{name}: shape {arr.shape}, expected {want} "
                                         f"({want[0]} test images x {want[1]} {hemi} vertices){hint}")
                if np.issubdtype(arr.dtype, np.number) and not np.isfinite(arr).all():
                    report.errors.append(f"{name}: {int((~np.isfinite(arr)).sum())} values are NaN or inf")
        extra = sorted({s for s, _ in found} - set(expected))
        if extra:
            report.errors.append(f"subjects not in the data root: {', '.join(extra)} (predictions for subjects the "
                                 "data root lacks cannot be checked; is --data the right root?)")
    if uncompressed:
        report.notes.append(f"size: {size / 2**20:.1f} MB zipped ({uncompressed / 2**20:.1f} MB of arrays), "
                            f"limit 300 MB")
    absent = [s for s in REAL_COUNTS if s not in expected]
    if absent:
        report.notes.append(f"partial submission: {', '.join(absent)} missing (not in the data root, so not required)")
    return report
