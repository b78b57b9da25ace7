"""The image index (every subject's images and their NSD ids) and the decoded uint8 image cache.

Each unique NSD image is decoded once, into one Zarr array ``pixels`` (N, S, S, 3) uint8 ordered
by NSD id; every backbone reads from it, so PNG decoding (about 220 images/s per core) never
bounds a GPU. Writes go chunk by chunk; a chunk is marked done (an empty file under ``done/``)
only after it is written, so a killed run resumes from the last complete chunk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .data import DataError, Problem, image_path, list_images
from .io import atomic_write_json, save_table
from .layout import SPLITS, subject_name

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- index


def build_index(root: str | Path, subjects: list[str]) -> pd.DataFrame:
    """One row per (subject, split, image): ``subject, split, row, nsd_id, path``.

    ``row`` is the 0-based fMRI row (train) or submission row (test) of the image.
    """
    rows = []
    for subject in subjects:
        subject = subject_name(subject)
        for split in SPLITS:
            for k, name in enumerate(list_images(root, subject, split)):
                rows.append((subject, split, k, name.nsd_id, str(image_path(root, subject, name))))
    return pd.DataFrame(rows, columns=["subject", "split", "row", "nsd_id", "path"])


def read_index(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"subject": str, "split": str, "row": np.int64, "nsd_id": np.int64, "path": str})


def unique_images(index: pd.DataFrame) -> pd.DataFrame:
    """The unique NSD images, sorted by NSD id, each with the first file that shows it."""
    return index.sort_values(["nsd_id", "subject", "split"]).drop_duplicates("nsd_id")[["nsd_id", "path"]].reset_index(
        drop=True
    )


# ----------------------------------------------------------------------------- decoding


def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode a PNG to (S, S, 3) uint8 RGB; grayscale, palette and RGBA images are converted.

    Raises :class:`DataError` naming the file if it is corrupt, truncated or not square when
    ``size`` is None.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    # Composite transparency on white rather than on black.
                    background = Image.new("RGB", im.size, (255, 255, 255))
                    background.paste(im.convert("RGBA"), mask=im.convert("RGBA").split()[-1])
                    im = background
                else:
                    im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(Problem(path, f"cannot decode the image ({type(err).__name__}: {err}); "
                                      "re-copy it from the original download")) from err


def _decode_many(args: tuple[list[str], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode_image(p, size) for p in paths])


# ----------------------------------------------------------------------------- cache


def _ids_digest(nsd_ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(nsd_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def build_image_cache(
    index: pd.DataFrame,
    store: str | Path,
    manifest: str | Path,
    size: int | None = None,
    chunk: int = 64,
    workers: int = 1,
) -> dict:
    """Decode every unique image once into ``store`` (Zarr) and write a small JSON ``manifest``.

    Parameters
    ----------
    index : DataFrame
        From :func:`build_index`.
    store : path
        The Zarr store; resumed if it holds the same images at the same size, rebuilt otherwise.
    size : int or None
        Side of the cached images; None keeps the first image's size (NSD: 425) and resizes
        any image that differs.
    chunk : int
        Images per chunk (the unit of writing and of resuming).
    workers : int
        Decoding processes.
    """
    import zarr
    from tqdm import tqdm

    store, manifest = Path(store), Path(manifest)
    uniq = unique_images(index)
    nsd_ids = uniq["nsd_id"].to_numpy(np.int64)
    paths = uniq["path"].tolist()
    if size is None:
        size = int(decode_image(paths[0]).shape[0])
    spec = {"nsd_ids_sha256": _ids_digest(nsd_ids), "n_images": len(nsd_ids), "size": size, "chunk": chunk}

    group = _open_resumable(store, spec)
    if "pixels" not in group:
        group.create_array("nsd_ids", data=nsd_ids, chunks=(len(nsd_ids),))
        group.create_array("pixels", shape=(len(nsd_ids), size, size, 3), chunks=(chunk, size, size, 3),
                           dtype="uint8", fill_value=0)
    pixels = group["pixels"]
    done_dir = store / "done"
    done_dir.mkdir(exist_ok=True)
    n_chunks = -(-len(nsd_ids) // chunk)
    todo = [c for c in range(n_chunks) if not (done_dir / str(c)).exists()]
    t0 = time.time()
    bar = tqdm(total=len(nsd_ids), initial=len(nsd_ids) - sum(_chunk_len(c, chunk, len(nsd_ids)) for c in todo),
               desc="decoding images", unit="img", mininterval=2)
    jobs = [(paths[c * chunk : (c + 1) * chunk], size) for c in todo]
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        for c, block in zip(todo, pool.map(_decode_many, jobs)):
            pixels[c * chunk : c * chunk + len(block)] = block
            (done_dir / str(c)).touch()
            bar.update(len(block))
    bar.close()
    elapsed = time.time() - t0
    info = {**spec, "store": str(store), "seconds": round(elapsed, 2),
            "images_per_second": round(sum(len(j[0]) for j in jobs) / elapsed, 1) if jobs and elapsed > 0 else None}
    atomic_write_json(manifest, info)
    return info


def _chunk_len(c: int, chunk: int, n: int) -> int:
    return min(chunk, n - c * chunk)


class _Inline:
    """A stand-in for an executor that maps in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def _open_resumable(store: Path, spec: dict):
    """Open ``store`` for writing if its recorded spec equals ``spec``; otherwise start it afresh."""
    import zarr

    if store.exists():
        try:
            old = zarr.open_group(store, mode="r").attrs.get("nsdflow_spec")
        except Exception:  # noqa: BLE001 - an unreadable store is rebuilt
            old = None
        if old == spec:
            log.info("resuming %s", store)
            return zarr.open_group(store, mode="a")
        log.info("%s was written with other settings: rebuilding it", store)
        shutil.rmtree(store)
    group = zarr.open_group(store, mode="w")
    group.attrs["nsdflow_spec"] = spec
    return group


class ImageCache:
    """Read access to a finished image cache: ``cache.rows(nsd_ids)`` and ``cache.pixels``."""

    def __init__(self, store: str | Path):
        import zarr

        self.store = Path(store)
        group = zarr.open_group(self.store, mode="r")
        self.pixels = group["pixels"]
        self.nsd_ids = group["nsd_ids"][:]
        self.spec = dict(group.attrs["nsdflow_spec"])
        n_chunks = -(-len(self.nsd_ids) // self.spec["chunk"])
        missing = [c for c in range(n_chunks) if not (self.store / "done" / str(c)).exists()]
        if missing:
            raise RuntimeError(f"{self.store} is incomplete ({len(missing)} chunks not written); rerun the image_cache rule")

    def __len__(self) -> int:
        return len(self.nsd_ids)

    def rows(self, nsd_ids) -> np.ndarray:
        """Positions of ``nsd_ids`` in the cache; raises KeyError for an id it lacks."""
        return lookup_rows(self.nsd_ids, nsd_ids, what=str(self.store))


def lookup_rows(sorted_ids: np.ndarray, wanted, what: str = "store") -> np.ndarray:
    """Positions of ``wanted`` in the ascending array ``sorted_ids``; KeyError naming any missing id."""
    wanted = np.asarray(wanted, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, wanted)
    pos_c = np.clip(pos, 0, len(sorted_ids) - 1)
    bad = sorted_ids[pos_c] != wanted
    if bad.any():
        raise KeyError(f"{what} lacks NSD ids {wanted[bad][:10].tolist()} ({int(bad.sum())} in all); rerun its rule")
    return pos_c


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))
