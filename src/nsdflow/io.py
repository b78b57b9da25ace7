"""Atomic file writes: every output is written under a temporary name and renamed into place.

A job killed at any moment therefore leaves either the previous file or none, never one that
looks finished but is not; the file is flushed to the disk before the rename, and the rename after
it, so that a power loss cannot leave one either. Errors of the file system (a full disk, a read-only folder) are
re-raised as :class:`OutputError` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class OutputError(OSError):
    """An output could not be written; the message says which file and why."""


#: errno values that mean "this location cannot take the output", with what to do about each.
_WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full: free space, or point the results elsewhere (run snakemake with "
                  "--directory on a larger disk)",
    errno.EDQUOT: "your disk quota is exceeded: free space or ask for a larger quota",
    errno.EACCES: "permission denied: check the folder's owner and permissions, or run from a "
                  "writable working directory",
    errno.EPERM: "operation not permitted: check the folder's owner and permissions",
    errno.EROFS: "the file system is read-only: run from a writable working directory",
}


def explain_os_error(err: OSError, path: str | Path | None = None) -> str | None:
    """A one-line explanation of a file-system error that the user must act on, or None.

    Used by the command line for errors raised deep inside libraries (zarr, numpy, PIL): the
    user learns which path failed and why, instead of reading a traceback.
    """
    hint = _WRITE_ERRORS.get(err.errno or -1)
    if hint is None:
        return None
    where = path or err.filename or "an output"
    return f"cannot write {where}: {hint}"


def _explain(path: Path, err: OSError) -> OutputError:
    hint = explain_os_error(err, path) or f"cannot write {path}: {err.strerror or err}"
    return OutputError(err.errno or 0, hint)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` keeps the extension that some writers insist on (``np.save`` appends ``.npy``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise _explain(path, err) from err
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode any other new file would get.
        os.chmod(tmp, _FILE_MODE)
        # The data reaches the disk before the rename does, and the rename before we return: else a
        # power loss could leave a finished-looking output that is empty (ext4 may persist a rename
        # before the data it points at).
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _explain(path, err) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_file(path: str | Path) -> None:
    """Flush a file's data to the disk (what any later rename or marker relies on)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (files created, renamed or removed in it) to the disk; a no-op
    where the file system cannot sync a folder."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, arr, allow_pickle=False)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_table(df, path: str | Path) -> None:
    """Write a pandas DataFrame as CSV or Parquet, by the extension of ``path``."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"unknown table format: {path.suffix} (use .csv or .parquet)")


def open_npz(path: str | Path, mmap_min_bytes: int = 1 << 16) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` (as ``np.savez`` writes), large ones memory-mapped.

    ``np.load`` reads every member of a zip into memory; fit jobs instead map the big arrays of
    a shared design (a Gram-method ``U`` of 10,000 x 10,000 images is 400 MB), so that parallel
    jobs share the page cache instead of each holding a copy. Compressed members are read.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED or info.file_size < mmap_min_bytes:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            fh.seek(info.header_offset)
            header = fh.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: member {info.filename} has no local zip header")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(fh))
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects")
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                                  order="F" if fortran else "C")
    return out
