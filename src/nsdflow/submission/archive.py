"""The challenge submission: assemble the zip and check it the way the leaderboard would.

Layout of the zip (no parent folder)::

    subj01/lh_pred_test.npy   float32 (n_test_images, n_lh_vertices), rows in sorted test-image order
    subj01/rh_pred_test.npy
    ...
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.layout import HEMISPHERES, REAL_COUNTS
from ..data.read import DataError, list_images, list_subjects, load_fmri
from ..io import atomic_path

MAX_BYTES = 300 * 1024 * 1024
#: A zip declaring this many entries (the count field's largest value, or zip64's marker) is refused
#: before its directory is read: reading it takes memory in proportion (a submission has 24).
MAX_ENTRIES = 0xFFFF
#: The most bytes of arrays read from one zip: three times a full submission's 320 MB.
MAX_ARRAY_BYTES = 1 << 30
#: Bytes of an entry read at a time: memory stays bounded whatever the entry declares or carries.
BLOCK_BYTES = 1 << 20
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
    entries = declared_entries(zip_path)
    if entries is not None and entries >= MAX_ENTRIES:
        report.errors.append(f"{zip_path}: declares {entries:,} or more entries (a submission has 24); refused "
                             "without reading them")
        return report
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        report.errors.append(f"{zip_path}: not a zip file ({err})")
        return report
    with zf:
        counts = Counter(n for n in zf.namelist() if not n.endswith("/"))
        names = list(counts)
        for name in sorted(n for n, c in counts.items() if c > 1):
            report.errors.append(f"{name}: appears {counts[name]} times in the zip; keep one")
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
        nested_set = set(nested)
        others = [n for n in strays if n not in nested_set]
        if others:
            report.notes.append(f"ignored files (not subjXX/{{lh,rh}}_pred_test.npy): {', '.join(others[:10])}"
                                + (f" and {len(others) - 10} more" if len(others) > 10 else ""))
        uncompressed = 0
        budget = MAX_ARRAY_BYTES
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
                info = zf.getinfo(name)
                uncompressed += info.file_size
                problems, read = check_entry(zf, info, want, hemi, budget)
                budget -= read
                report.errors += [f"{name}: {p}" for p in problems]
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


def declared_entries(path: str | Path) -> int | None:
    """The entry count in a zip's end-of-central-directory record, read before the directory
    itself (None where there is no such record: not a zip)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - (22 + 0xFFFF)))  # the record (22 bytes) and at most a 64 KB comment
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    return struct.unpack("<H", tail[at + 10 : at + 12])[0]


def check_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, want: tuple[int, int], hemi: str,
                budget: int) -> tuple[list[str], int]:
    """Problems of one prediction entry, which must be a float32 array of shape ``want`` (test
    images, ``hemi`` vertices) and nothing else.

    The entry is streamed: its header first (dtype and shape), then, only if its declared size is
    exactly that of the header and the array and within ``budget`` bytes, its values in blocks of
    :data:`BLOCK_BYTES`, counting those not finite. So a zip bomb (a small entry declaring or
    carrying gigabytes after a valid header) costs one block of memory and no time.

    Returns
    -------
    problems : list of str
        What is wrong, without the entry's name.
    read : int
        Bytes of values read.
    """
    # Deflate grows incompressible data by well under 1 %: more compressed data than that is not the array.
    if info.compress_size > info.file_size + info.file_size // 256 + 1024:
        return [f"carries {info.compress_size:,} bytes of compressed data for {info.file_size:,} declared; refused "
                "unread"], 0
    need = int(np.prod(want)) * 4
    try:
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} (np.save writes 1.0)")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            if dtype.hasobject:  # np.load's own words: the leaderboard loads without pickles
                raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
            problems = []
            if dtype != np.float32:
                problems.append(f"dtype {dtype}, must be float32")
            if shape != want:
                hint = " (transposed?)" if shape == want[::-1] else ""
                problems.append(f"shape {shape}, expected {want} ({want[0]} test images x {want[1]} {hemi} vertices){hint}")
            if problems:
                return problems, 0
            header = member.tell()
            if info.file_size != header + need:
                more = info.file_size - header - need
                what = f"{more:,} bytes after" if more > 0 else f"{-more:,} bytes missing from"
                return [f"declares {info.file_size:,} bytes: {what} its {want} float32 array; refused unread"], 0
            if need > budget:
                return [f"reading it would take the arrays past {MAX_ARRAY_BYTES / 2**30:.0f} GB in all, more than "
                        "any submission holds; refused unread"], 0
            nonfinite, left = 0, need
            while left:
                block = member.read(min(BLOCK_BYTES, left))
                if not block:
                    raise ValueError(f"the entry ends {left:,} bytes before its array does")
                left -= len(block)
                nonfinite += int(np.count_nonzero(~np.isfinite(np.frombuffer(block, dtype=dtype))))
    except Exception as err:  # noqa: BLE001 - any unreadable entry is one problem
        return [f"not a readable .npy array ({type(err).__name__}: {err})"], 0
    return ([f"{nonfinite} values are NaN or inf"] if nonfinite else []), need
