"""Resumable chunked Zarr stores: the spec check, the rebuild, the per-chunk done flags, the lock.

Both the image cache and the feature stores are written the same way (no torch here):

* the store's ``attrs["nsdflow_spec"]`` records everything that determines its values; a store
  whose spec differs from the requested one is moved aside and deleted, then rebuilt, so old
  and new values never mix (the move is atomic: a run killed while deleting leaves no store
  that looks like the old one);
* rows are written a whole chunk at a time, and chunk ``c`` is marked done by creating the empty
  file ``done/<c>`` only after every array of the chunk is on disk: a run killed at any moment
  resumes from the chunks marked done, and readers refuse a store with a chunk not done;
* :func:`open_store` lets several processes open one store at once (the shards of an
  extraction each write their own chunks; only one creates the store), and keeps a job with
  other settings from deleting a store that a running job writes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from ..io import fsync_dir, fsync_file

log = logging.getLogger(__name__)

SPEC_ATTR = "nsdflow_spec"
#: How long :func:`open_store` waits for a job with other settings before raising StoreBusy.
STORE_WAIT_SECONDS = 60.0


def normalise_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as it reads back from the store's JSON attributes (tuples become lists...)."""
    return json.loads(json.dumps(spec, sort_keys=True))


def n_chunks(n_rows: int, chunk: int) -> int:
    return -(-n_rows // chunk)


def chunk_rows(c: int, chunk: int, n_rows: int) -> tuple[int, int]:
    """The row range ``[start, stop)`` of chunk ``c``."""
    return c * chunk, min(n_rows, (c + 1) * chunk)


def shard_chunks(n_chunks_: int, shard: int, shards: int) -> range:
    """The contiguous chunk range of shard ``shard`` of ``shards`` (sizes differ by at most one)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return range(shard * n_chunks_ // shards, (shard + 1) * n_chunks_ // shards)


def done_dir(store: str | Path) -> Path:
    return Path(store) / "done"


def done_chunks(store: str | Path) -> set[int]:
    """Indices of the chunks marked done."""
    folder = done_dir(store)
    if not folder.is_dir():
        return set()
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()}


def missing_chunks(store: str | Path, n_rows: int, chunk: int) -> list[int]:
    done = done_chunks(store)
    return [c for c in range(n_chunks(n_rows, chunk)) if c not in done]


def mark_done(store: str | Path, c: int) -> None:
    """Mark chunk ``c`` done: call only after every array of the chunk is written.

    The chunk's files are flushed to the disk first (:func:`sync_chunk`; zarr writes plain files
    and never syncs them), so that after a power loss a chunk marked done holds its data. The
    marker itself is not synced: one lost to a power loss only has its chunk written again.
    """
    sync_chunk(store, c)
    folder = done_dir(store)
    folder.mkdir(exist_ok=True)
    (folder / str(c)).touch()


def sync_chunk(store: str | Path, c: int) -> None:
    """fsync the files of row chunk ``c`` of every array in ``store``, and the folders holding them.

    Arrays are found from their ``zarr.json``; their chunks use zarr's default keys, under which
    row chunk ``c`` is the file or folder ``<array>/c/<c>`` (a folder of column chunks for a 2-D
    array and more).
    """
    for array in _array_dirs(Path(store)):
        key = array / "c" / str(c)
        if key.is_file():
            files = [key]
        else:
            files = sorted(p for p in key.rglob("*") if p.is_file()) if key.is_dir() else []
        folders = {array}
        for f in files:
            fsync_file(f)
            folders.update(p for p in f.parents if p.is_relative_to(array))
        for folder in sorted(folders, key=lambda p: -len(p.parts)):  # deepest first: entries before their folder's
            fsync_dir(folder)


def _array_dirs(store: Path) -> list[Path]:
    """The folders of the arrays of a zarr v3 store (its groups are walked, its chunks are not)."""
    arrays, todo = [], [store]
    while todo:
        node = todo.pop()
        try:
            kind = json.loads((node / "zarr.json").read_text()).get("node_type")
        except (OSError, ValueError):
            continue  # not a zarr node (done/, a half-created array)
        if kind == "array":
            arrays.append(node)
        elif kind == "group":
            todo += [p for p in node.iterdir() if p.is_dir()]
    return arrays


def unmark_done(store: str | Path, c: int) -> None:
    """Mark chunk ``c`` not done, before rewriting any of its rows (a kill then leaves it redone)."""
    (done_dir(store) / str(c)).unlink(missing_ok=True)


def stale_rows(recorded, current, chunk: int, done: set[int]) -> dict[int, list[int]]:
    """Rows of the done chunks whose recorded content digest differs from the current one, as
    ``{chunk: [rows within the chunk]}`` (chunks not done are redone whole anyway)."""
    import numpy as np

    changed = np.flatnonzero(np.asarray(recorded) != np.asarray(current))
    out: dict[int, list[int]] = {}
    for row in changed.tolist():
        if row // chunk in done:
            out.setdefault(row // chunk, []).append(row % chunk)
    return out


def remove_store(store: str | Path) -> None:
    """Delete a store: first renamed aside atomically, so a kill mid-deletion leaves no half store."""
    store = Path(store)
    if not store.exists():
        return
    trash = store.with_name(f".{store.name}.deleting-{uuid.uuid4().hex[:8]}")
    os.replace(store, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(store: Path) -> None:
    for old in store.parent.glob(f".{store.name}.deleting-*"):
        shutil.rmtree(old, ignore_errors=True)


def read_spec(store: str | Path) -> dict[str, Any] | None:
    """The spec recorded in a store, or None if there is no readable store."""
    import zarr

    try:
        return dict(zarr.open_group(Path(store), mode="r").attrs[SPEC_ATTR])
    except Exception:  # noqa: BLE001 - missing, half-written or foreign: all mean "no usable store"
        return None


def open_resumable(store: str | Path, spec: dict[str, Any]):
    """Open ``store`` for writing if its recorded spec equals ``spec``; otherwise start it afresh.

    Returns ``(group, resumed)``. Use :func:`open_store` when several processes may open the
    same store.
    """
    import zarr

    store = Path(store)
    spec = normalise_spec(spec)
    if store.parent.is_dir():
        _remove_leftovers(store)
    if store.exists():
        old = read_spec(store)
        if old == spec:
            log.info("resuming %s (%d chunks already done)", store, len(done_chunks(store)))
            return zarr.open_group(store, mode="a"), True
        if old is None:
            log.info("%s is not a readable store: rebuilding it", store)
        else:
            changed = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            log.info("%s was written with other settings (%s): rebuilding it", store, ", ".join(changed))
        remove_store(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(store, mode="w")
    group.attrs[SPEC_ATTR] = spec
    done_dir(store).mkdir(exist_ok=True)
    return group, False


class StoreBusy(RuntimeError):
    """Another job holds the store with other settings: rebuilding it would destroy its work."""


def _flock(fh, mode: int) -> bool:
    """flock ``fh``; False (after a warning) where the file system has no locks."""
    import fcntl

    try:
        fcntl.flock(fh, mode)
        return True
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            log.warning("%s: file locks are not supported here (%s); proceeding without one", fh.name, err)
            return False
        raise


@contextlib.contextmanager
def open_store(store: str | Path, spec: dict[str, Any], create, wait: float | None = None) -> Iterator[tuple[Any, bool]]:
    """Open ``store`` for writing while other processes may write it too; yields ``(group, resumed)``.

    The store is reused if its spec equals ``spec``, else rebuilt (:func:`open_resumable`), and
    ``create(group)`` adds the arrays to a new store, the array ``nsd_ids`` last (its presence
    says the store is fully created). Throughout the ``with`` block the process
    holds a shared lock on ``<store>.lock``; creating or rebuilding needs the exclusive lock,
    held only for that moment. So shards of one extraction open the store together and write
    their own chunks, while a job with *other* settings cannot delete a store that a running
    job writes: it waits up to ``wait`` seconds (:data:`STORE_WAIT_SECONDS`), then raises :class:`StoreBusy`. Locks vanish
    with their process: a killed job leaves none behind.
    """
    import fcntl

    import zarr

    store = Path(store)
    spec = normalise_spec(spec)
    lock = store.with_name(store.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (STORE_WAIT_SECONDS if wait is None else wait)

    with open(lock, "a+") as fh:
        while True:
            locking = _flock(fh, fcntl.LOCK_SH)
            if _created(store) and read_spec(store) == spec:
                group, resumed = zarr.open_group(store, mode="a"), True
                done_dir(store).mkdir(exist_ok=True)
                log.info("resuming %s (%d chunks already done)", store, len(done_chunks(store)))
                break
            if locking:
                fcntl.flock(fh, fcntl.LOCK_UN)
            try:
                if locking:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    old = read_spec(store) or {}
                    changed = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
                    raise StoreBusy(f"{store} is being written by another job with other settings "
                                    f"({', '.join(changed) or 'store being created'}); rebuilding it now would destroy "
                                    "that job's work. Let it finish or stop it, then rerun") from None
                time.sleep(0.5)
                continue
            group, resumed = open_resumable(store, spec)
            if not _created(store):
                create(group)
            if locking:
                fcntl.flock(fh, fcntl.LOCK_SH)  # keep a shared lock while writing
            break
        try:
            yield group, resumed
        finally:
            if locking:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _created(store: Path) -> bool:
    return (store / "nsd_ids" / "zarr.json").is_file()
