"""The image index (every subject's images and their NSD ids) and the decoded uint8 image cache.

Each unique NSD image is decoded once, into one Zarr array ``pixels`` (N, S, S, 3) uint8 ordered
by NSD id; every backbone reads from it, so PNG decoding (about 220 images/s per core) never
bounds a GPU. The pixels come from the subjects' PNG files, or from NSD's own
``nsd_stimuli.hdf5`` (dataset ``imgBrick``, 73,000 x 425 x 425 x 3 uint8) when the user has it.

Decoding runs in worker processes, each of which writes whole chunks of the cache itself
(nothing large crosses a pipe, and at most two chunks per worker are in flight, so memory stays
bounded whatever the number of images). A chunk is marked done (an empty file under ``done/``)
only after it is written, so a killed run resumes from the last complete chunk; see
:mod:`nsdflow.features.chunks`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.layout import SPLITS, subject_name
from ..data.read import DataError, Problem, image_path, list_images, open_png
from ..io import atomic_write_json, fsync_dir
from .chunks import (
    chunk_rows,
    done_chunks,
    done_dir,
    mark_done,
    missing_chunks,
    n_chunks,
    open_store,
    stale_rows,
    unmark_done,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Image sources of the cache (``images.source`` in the config).
SOURCES = ("png", "hdf5")
#: Bumped when the cache's layout changes (a cache of another format is rebuilt).
CACHE_FORMAT = 2
#: Fewer images than this per worker process are decoded in fewer processes: starting a
#: process (and importing numpy, zarr, PIL in it) costs about as much as decoding 200 images.
MIN_IMAGES_PER_WORKER = 200
#: Compression of the cache's chunks (``images.compression``): uncompressed costs no
#: decompression when read, and natural images gain only about 10 % from lossless compression
#: (bench/extract_cache_codecs.py).
COMPRESSIONS = ("none", "zstd")


# ----------------------------------------------------------------------------- index


def build_index(root: str | Path, subjects: list[str]) -> pd.DataFrame:
    """One row per (subject, split, image): ``subject, split, row, nsd_id, path``.

    ``row`` is the 0-based fMRI row (train) or submission row (test) of the image.
    """
    import pandas as pd

    rows = []
    for subject in subjects:
        subject = subject_name(subject)
        for split in SPLITS:
            for k, name in enumerate(list_images(root, subject, split)):
                rows.append((subject, split, k, name.nsd_id, str(image_path(root, subject, name))))
    return pd.DataFrame(rows, columns=["subject", "split", "row", "nsd_id", "path"])


def read_index(path: str | Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path, dtype={"subject": str, "split": str, "row": np.int64, "nsd_id": np.int64, "path": str})


def unique_images(index: pd.DataFrame) -> pd.DataFrame:
    """The unique NSD images, sorted by NSD id, each with the first file that shows it."""
    return index.sort_values(["nsd_id", "subject", "split"]).drop_duplicates("nsd_id")[["nsd_id", "path"]].reset_index(
        drop=True
    )


# ----------------------------------------------------------------------------- decoding


def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode a PNG to (H, W, 3) uint8 RGB, resized to (size, size) unless ``size`` is None;
    grayscale, palette and RGBA images are converted.

    Raises :class:`DataError` naming the file if it is corrupt or truncated, not PNG content, or
    larger than :data:`~nsdflow.data.read.MAX_IMAGE_PIXELS` (checked before decoding).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with open_png(path) as im:
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
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(Problem(path, f"cannot decode the image ({type(err).__name__}: {err}); "
                                      "re-copy it from the original download")) from err


def image_sizes(paths) -> list[tuple[int, int] | None]:
    """Each PNG's (width, height) from its header (no decoding); None where it cannot be read
    (decoding it names the problem)."""
    sizes = []
    for path in paths:
        try:
            with open_png(path) as im:
                sizes.append(im.size)
        except Exception:  # noqa: BLE001 - any unreadable file is named when it is decoded
            sizes.append(None)
    return sizes


def cache_side(sizes: list[tuple[int, int] | None]) -> int:
    """The side of the cache when ``images.size`` is unset: the most common image size (a tie
    goes to the larger), so that one odd image cannot set it.

    Raises ValueError if no size is known or the most common one is not square.
    """
    from collections import Counter

    counts = Counter(s for s in sizes if s is not None)
    if not counts:
        raise ValueError("images.size: no image of the index could be read to learn the images' size; set it")
    (width, height), _ = max(counts.items(), key=lambda item: (item[1], item[0][0] * item[0][1]))
    if width != height:
        raise ValueError(f"images.size: most images are {width} x {height}, not square; set images.size to the "
                         "side the cached images should have")
    return width


def log_resized(paths, sizes: list[tuple[int, int] | None], size: int, chosen: bool) -> None:
    """Say which images the cache resizes to ``size`` (a warning when the size was chosen by
    :func:`cache_side`, not set by the user)."""
    odd = [(p, s) for p, s in zip(paths, sizes) if s is not None and s != (size, size)]
    if odd:
        names = ", ".join(f"{Path(p).name} ({w} x {h})" for p, (w, h) in odd[:5])
        more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
        (log.warning if chosen else log.info)("%d of %d images are resized to %d x %d (bicubic): %s%s", len(odd),
                                              len(sizes), size, size, names, more)


def resize_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize one (H, W, 3) uint8 image to (size, size, 3) as :func:`decode_image` does (bicubic)."""
    if pixels.shape[:2] == (size, size):
        return pixels
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


@dataclass(frozen=True)
class PngSource:
    """The images as PNG files, one path per row of the cache."""

    paths: tuple[str, ...]

    def subset(self, start: int, stop: int) -> "PngSource":
        return PngSource(self.paths[start:stop])

    def take(self, rows) -> "PngSource":
        return PngSource(tuple(self.paths[int(r)] for r in rows))

    def read(self, size: int | None) -> np.ndarray:
        """Every image of the source as (n, size, size, 3) uint8 (size None: their own)."""
        return np.stack([decode_image(p, size) for p in self.paths])

    def digests(self) -> np.ndarray:
        """Each image's content digest (uint64: the first 8 bytes of its file's SHA-256), from
        the digests the DAG keeps (:mod:`nsdflow.digests`): a stat per file when they are known."""
        from ..digests import DigestCache

        cache = DigestCache()
        out = np.array([int(cache.digest(p)[:16], 16) for p in self.paths], dtype=np.uint64)
        cache.save()
        return out

    def identity(self) -> dict:
        return {"source": "png"}


#: One open HDF5 file per worker process (h5py handles are neither picklable nor thread-safe).
_HDF5_FILES: dict[str, object] = {}


@dataclass(frozen=True)
class Hdf5Source:
    """NSD's ``nsd_stimuli.hdf5``: row ``nsd_id - base`` of ``dataset`` (N, H, W, 3) uint8."""

    path: str
    dataset: str
    nsd_ids: tuple[int, ...]
    base: int

    def _data(self):
        import h5py

        if self.path not in _HDF5_FILES:
            _HDF5_FILES[self.path] = h5py.File(self.path, "r")
        return _HDF5_FILES[self.path][self.dataset]

    def subset(self, start: int, stop: int) -> "Hdf5Source":
        return Hdf5Source(self.path, self.dataset, self.nsd_ids[start:stop], self.base)

    def take(self, rows) -> "Hdf5Source":
        return Hdf5Source(self.path, self.dataset, tuple(self.nsd_ids[int(r)] for r in rows), self.base)

    def digests(self) -> np.ndarray:
        """No per-image digests: the file's own content digest is part of the cache's identity."""
        return np.zeros(len(self.nsd_ids), dtype=np.uint64)

    def read(self, size: int) -> np.ndarray:
        """Every image of the source as (n, size, size, 3) uint8."""
        data = self._data()
        rows = np.asarray(self.nsd_ids, dtype=np.int64) - self.base
        # Contiguous runs are read as one slice (NSD ids of a chunk are sorted, often consecutive).
        out = []
        i = 0
        while i < len(rows):
            j = i + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1:
                j += 1
            out.extend(resize_image(img, size) for img in data[int(rows[i]) : int(rows[j - 1]) + 1])
            i = j
        return np.stack(out)

    def identity(self) -> dict:
        from ..digests import DigestCache

        cache = DigestCache()
        sha256 = cache.digest(self.path)
        cache.save()
        return {"source": "hdf5", "path": str(Path(self.path).resolve()), "dataset": self.dataset,
                "sha256": sha256, "index_base": self.base}


def open_hdf5_images(path: str | Path, dataset: str = "imgBrick"):
    """Open NSD's stimulus file and check its layout; returns the h5py dataset (file kept open)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(Problem(path, "images.hdf5: the file does not exist (NSD's nsd_stimuli.hdf5, or set "
                                      "images.source: png)"))
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(Problem(path, f"cannot open as HDF5 ({err})")) from err
    if dataset not in f:
        raise DataError(Problem(path, f"has no dataset {dataset!r} (it has {', '.join(f.keys())}); "
                                      "set images.hdf5_dataset"))
    data = f[dataset]
    if data.ndim != 4 or data.shape[3] != 3 or data.dtype != np.uint8:
        raise DataError(Problem(path, f"dataset {dataset!r} is {data.shape} {data.dtype}; expected "
                                      "(N, H, W, 3) uint8 like NSD's imgBrick"))
    return data


def detect_index_base(data, nsd_ids: np.ndarray, paths: list[str], n_check: int = 3) -> int:
    """Whether NSD id ``k`` is row ``k`` (base 0) or row ``k - 1`` (base 1) of the HDF5 images.

    Decided by comparing a few PNGs of the data root with the HDF5 rows under each convention;
    raises :class:`DataError` if neither matches (another file, or other images).
    """
    errors = {0: [], 1: []}
    checked = 0
    for nsd_id, path in zip(nsd_ids, paths):
        try:
            png = decode_image(path)
        except DataError:
            continue  # an empty or corrupt file says nothing; the cache never reads it
        for base in (0, 1):
            row = int(nsd_id) - base
            if 0 <= row < data.shape[0]:
                img = resize_image(data[row], png.shape[0]) if data.shape[1:3] != png.shape[:2] else data[row]
                errors[base].append(float(np.abs(img.astype(np.int16) - png.astype(np.int16)).mean()))
            else:
                errors[base].append(np.inf)
        checked += 1
        if checked == n_check:
            break
    if not checked:
        raise DataError(Problem(Path(paths[0]) if paths else Path("."),
                                "cannot tell whether NSD ids index the HDF5 from 0 or 1: no PNG of the data "
                                "root decodes; set images.hdf5_index_base to 0 or 1"))
    mean = {b: float(np.mean(e)) for b, e in errors.items()}
    best = min(mean, key=mean.get)
    if mean[best] > 2.0:
        raise DataError(Problem(Path(data.file.filename),
                                f"its images do not match the data root's PNGs (mean absolute difference "
                                f"{mean[0]:.1f} with NSD ids from 0, {mean[1]:.1f} from 1): is it NSD's "
                                "nsd_stimuli.hdf5? Set images.source: png to decode the PNGs instead"))
    return best


def make_source(uniq: pd.DataFrame, source: str = "png", hdf5: str | Path | None = None,
                hdf5_dataset: str = "imgBrick", index_base: str | int = "auto"):
    """The pixel source of the unique images ``uniq`` (from :func:`unique_images`)."""
    if source == "png":
        return PngSource(tuple(uniq["path"].tolist()))
    if source != "hdf5":
        raise ValueError(f"images.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if not hdf5:
        raise ValueError("images.source is hdf5 but images.hdf5 (the path of nsd_stimuli.hdf5) is not set")
    data = open_hdf5_images(hdf5, hdf5_dataset)
    nsd_ids = uniq["nsd_id"].to_numpy(np.int64)
    base = detect_index_base(data, nsd_ids, uniq["path"].tolist()) if index_base == "auto" else int(index_base)
    bad = nsd_ids[(nsd_ids - base < 0) | (nsd_ids - base >= data.shape[0])]
    if bad.size:
        raise DataError(Problem(Path(hdf5), f"holds {data.shape[0]} images; NSD ids {bad[:10].tolist()} (from "
                                            f"{base}) are outside it"))
    log.info("%s: %s images, NSD id k is row k%s", hdf5, data.shape[0], f" - {base}" if base else "")
    data.file.close()
    return Hdf5Source(str(hdf5), hdf5_dataset, tuple(int(i) for i in nsd_ids), base)


# ----------------------------------------------------------------------------- cache


def _ids_digest(nsd_ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(nsd_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


#: The open ``pixels`` array of each store, per worker process.
_OPEN_ARRAYS: dict[str, object] = {}


def _fill_chunk(job: tuple) -> tuple[int, int]:
    """Decode rows ``rows`` of chunk ``c`` (all of them when None) and write them and the chunk's
    content digests, then mark the chunk done (runs in a worker process). Returns ``(c, rows decoded)``."""
    import zarr

    store, c, start, stop, source, size, rows, digests = job
    if store not in _OPEN_ARRAYS:
        group = zarr.open_group(store, mode="r+")
        _OPEN_ARRAYS[store] = (group["pixels"], group["digests"])
    pixels, recorded = _OPEN_ARRAYS[store]
    if rows is None:
        pixels[start:stop] = source.read(size)
    else:
        block = source.read(size)
        for i, r in enumerate(rows):
            pixels[start + r] = block[i]
    recorded[start:stop] = digests  # chunks of digests and pixels align: no two workers share one
    mark_done(store, c)
    return c, stop - start if rows is None else len(rows)


def build_image_cache(
    index: pd.DataFrame,
    store: str | Path,
    manifest: str | Path,
    size: int | None = None,
    chunk: int = 64,
    workers: int = 1,
    source: str = "png",
    hdf5: str | Path | None = None,
    hdf5_dataset: str = "imgBrick",
    index_base: str | int = "auto",
    compression: str = "none",
) -> dict:
    """Decode every unique image once into ``store`` (Zarr) and write a small JSON ``manifest``.

    Parameters
    ----------
    index : DataFrame
        From :func:`build_index`.
    store : path
        The Zarr store; resumed if it holds the same images at the same size from the same
        source, rebuilt otherwise.
    size : int or None
        Side of the cached images; None takes the images' most common size (NSD: 425,
        :func:`cache_side`). Images of another size are resized, and the log says which.
    chunk : int
        Images per chunk (the unit of writing and of resuming).
    workers : int
        Decoding processes, each writing its own chunks.
    source : {"png", "hdf5"}
        Decode the subjects' PNG files, or read NSD's ``nsd_stimuli.hdf5`` (``hdf5``,
        ``hdf5_dataset``) where NSD id ``k`` is row ``k - index_base`` ("auto": found by
        comparing a few PNGs with the file).
    compression : {"none", "zstd"}
        Compression of the chunks.
    """
    from tqdm import tqdm

    if compression not in COMPRESSIONS:
        raise ValueError(f"images.compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    store, manifest = Path(store), Path(manifest)
    uniq = unique_images(index)
    nsd_ids = uniq["nsd_id"].to_numpy(np.int64)
    n = len(nsd_ids)
    if not n:
        raise DataError(Problem(store, "the image index lists no images"))
    src = make_source(uniq, source, hdf5, hdf5_dataset, index_base)
    if source == "png":
        sizes = image_sizes(src.paths)
        chosen = size is None
        size = cache_side(sizes) if chosen else size
        log_resized(src.paths, sizes, size, chosen)
    else:
        data = open_hdf5_images(hdf5, hdf5_dataset)
        size = int(data.shape[1]) if size is None else size
        if data.shape[1:3] != (size, size):
            log.info("%s holds %d x %d images: resized to %d x %d (bicubic)", hdf5, data.shape[2], data.shape[1],
                     size, size)
        data.file.close()
    spec = {"format": CACHE_FORMAT, "nsd_ids_sha256": _ids_digest(nsd_ids), "n_images": n, "size": size,
            "chunk": chunk, "compression": compression, **src.identity()}
    digests = src.digests()

    def create(group) -> None:
        group.create_array("pixels", shape=(n, size, size, 3), chunks=(chunk, size, size, 3), dtype="uint8",
                           fill_value=0, compressors=None if compression == "none" else "auto")
        group.create_array("digests", shape=(n,), chunks=(chunk,), dtype="uint64", fill_value=0)
        group.create_array("nsd_ids", data=nsd_ids, chunks=(n,))  # last: marks the store as created

    with open_store(store, spec, create) as (group, _):
        _OPEN_ARRAYS.pop(str(store), None)  # the store may have been rebuilt since this process opened it
        todo = missing_chunks(store, n, chunk)
        changed = stale_rows(group["digests"][:], digests, chunk, done_chunks(store))
        if len(todo) < n_chunks(n, chunk):
            log.info("resuming: %d of %d chunks already cached", n_chunks(n, chunk) - len(todo), n_chunks(n, chunk))
        if changed:
            n_changed = sum(len(r) for r in changed.values())
            log.info("%d of %d images changed: decoded again (in %d chunks)", n_changed, n, len(changed))
            for c in changed:
                unmark_done(store, c)
        # Each job carries only its own rows' paths or ids, so nothing large is pickled per chunk.
        def job(c, rows):
            lo, hi = chunk_rows(c, chunk, n)
            source_rows = src.subset(lo, hi) if rows is None else src.take([lo + r for r in rows])
            return str(store), c, lo, hi, source_rows, size, rows, digests[lo:hi]

        jobs = [job(c, None) for c in todo] + [job(c, rows) for c, rows in sorted(changed.items())]
        n_todo = sum(chunk_rows(c, chunk, n)[1] - chunk_rows(c, chunk, n)[0] for c in todo) + \
            sum(len(r) for r in changed.values())
        t0 = time.time()
        bar = tqdm(total=n, initial=n - n_todo, desc=f"caching images ({source})", unit="img", mininterval=2,
                   smoothing=0.1)

        def finished(result: tuple[int, int]) -> None:
            bar.update(result[1])

        workers = max(1, min(int(workers), len(jobs), n_todo // MIN_IMAGES_PER_WORKER))
        if workers == 1:
            for job in jobs:
                finished(_fill_chunk(job))
        else:
            import multiprocessing

            # spawn, not fork: zarr's I/O thread and h5py handles do not survive a fork.
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                pending: set[Future] = set()
                queue = iter(jobs)
                for job in queue:
                    pending.add(pool.submit(_fill_chunk, job))
                    if len(pending) >= 2 * workers:  # bounded: at most two chunks per worker in flight
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            finished(fut.result())
                for fut in pending:
                    finished(fut.result())
    bar.close()
    elapsed = time.time() - t0
    missing = missing_chunks(store, n, chunk)
    if missing:
        raise RuntimeError(f"{store}: chunks {missing[:10]} were not written; rerun the image_cache rule")
    fsync_dir(done_dir(store))  # the markers the manifest vouches for reach the disk before it does
    rate = round(n_todo / elapsed, 1) if n_todo and elapsed > 0 else None
    log.info("cached %d images in %.1f s (%s images/s, %d workers)", n_todo, elapsed, rate, workers)
    info = {**spec, "store": str(store), "cached_images": n_todo, "workers": workers, "seconds": round(elapsed, 2),
            "images_per_second": rate}
    atomic_write_json(manifest, info)
    return info


class ImageCache:
    """Read access to a finished image cache: ``cache.rows(nsd_ids)`` and ``cache.pixels``."""

    def __init__(self, store: str | Path):
        import zarr

        self.store = Path(store)
        group = zarr.open_group(self.store, mode="r")
        self.pixels = group["pixels"]
        self.nsd_ids = group["nsd_ids"][:]
        #: Each image's content digest: a feature store records the digests it was computed from.
        self.digests = group["digests"][:]
        self.spec = dict(group.attrs["nsdflow_spec"])
        missing = missing_chunks(self.store, len(self.nsd_ids), self.spec["chunk"])
        if missing:
            raise RuntimeError(f"{self.store} is incomplete ({len(missing)} chunks not written); rerun the image_cache rule")

    def __len__(self) -> int:
        return len(self.nsd_ids)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images ``[start, stop)`` as (n, S, S, 3) uint8."""
        return np.asarray(self.pixels[start:stop])

    def take(self, rows) -> np.ndarray:
        """Images at ``rows`` (ascending) as (n, S, S, 3) uint8."""
        return np.asarray(self.pixels.get_orthogonal_selection((np.asarray(rows, dtype=np.int64),)))

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
