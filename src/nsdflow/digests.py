"""Content digests of the data root's files, cached by (path, size, modification time).

The DAG (:mod:`nsdflow.dag`) decides what to rerun from the *content* of the data a job reads,
never from file times: a copied or touched data root reruns nothing, a changed file reruns what
reads it. Hashing the real data (16 fMRI files of 750 MB, 80,000 images) takes minutes once;
the digests are then kept in one JSON file beside Snakemake's own metadata and reused while a
file's path, size and modification time are unchanged, so that a DAG is built in seconds (a
``stat`` per file). A copy of the root changes the times, so its files are hashed once more and
found equal: nothing reruns.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Where the cache lives (relative to the working directory, beside Snakemake's metadata).
CACHE_PATH = Path(".snakemake") / "nsdflow-digests.json"
_BLOCK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


class DigestCache:
    """SHA-256 of files, computed once per (path, size, mtime) and kept in a JSON file.

    ``digest(path)`` is the file's content hash (``"missing"`` for a file that does not exist);
    :meth:`save` writes the cache back (atomically; concurrent writers may each lose the other's
    new entries, which are then computed again, never wrong).
    """

    def __init__(self, path: str | Path | None = CACHE_PATH):
        self.path = Path(path) if path else None
        self._entries: dict[str, list] = {}
        self._dirty = False
        if self.path and self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged cache is rebuilt, never trusted
                self._entries = {}

    def fresh(self, path: str | Path) -> bool:
        """Whether ``path``'s digest is cached for its current size and modification time (or it is missing)."""
        try:
            st = os.stat(os.path.abspath(path))
        except FileNotFoundError:
            return True
        entry = self._entries.get(os.path.abspath(path))
        return entry is not None and entry[:2] == [st.st_size, st.st_mtime_ns]

    def digest(self, path: str | Path) -> str:
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "missing"
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self._entries.get(path)
        if entry is not None and entry[:2] == stamp:
            return entry[2]
        value = file_sha256(path)
        self._entries[path] = [*stamp, value]
        self._dirty = True
        return value

    def save(self) -> None:
        if not (self.path and self._dirty):
            return
        from .io import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps(self._entries, separators=(",", ":")))
            self._dirty = False
        except OSError:  # a read-only working directory: digests are recomputed next time
            pass


def combine(*parts) -> str:
    """One short hash of JSON-able parts (digests, specs, names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:16]
