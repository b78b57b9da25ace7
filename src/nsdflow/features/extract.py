"""Extract backbone features for every unique image into one resumable Zarr store per backbone.

Store layout (``results/features/<backbone>.zarr``)::

    zarr.json        attrs["nsdflow_spec"]: model, weights identity, preprocessing, layers, dtype...
    nsd_ids          (N,) int64, ascending: row i holds NSD image nsd_ids[i]
    layers/<layer>   (N, D) float16 or float32, ``chunk`` rows per chunk, NaN until written
    done/<c>         empty file: chunk c of every layer is written

A store whose recorded spec differs from the requested one is deleted and re-extracted, so
old and new features never mix (:mod:`.chunks`). Rows are written a whole chunk at a time, and
a chunk is marked done only after every layer of it is on disk: a killed run resumes from the
chunks marked done, and :class:`~nsdflow.features.store.FeatureStore` refuses a store with a
chunk not done.

Sharding: shard ``k`` of ``N`` (:func:`extract_features`) writes the contiguous chunk range
:func:`~nsdflow.features.chunks.shard_chunks` of the same store (one writer per chunk) and a
small shard manifest; :func:`combine_features` checks that every chunk is done and writes the
backbone's manifest, the only file downstream rules depend on.

The loop (the same code on CPU and GPU): a background thread reads the next image chunks
from the uint8 cache (into pinned memory on CUDA); each batch is copied to the device
(``non_blocking``), resized and normalised there, run under ``torch.inference_mode`` (autocast
to bfloat16/float16 on GPU) and pooled on the device; the pooled features are copied into a
(pinned) host block, and a writer thread writes the block to Zarr while the next chunk is
computed. Host memory is two chunk blocks plus the read-ahead, whatever the number of images.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..io import atomic_write_json
from .backbones import Backbone, build_backbone
from .chunks import (
    chunk_rows,
    done_chunks,
    mark_done,
    n_chunks,
    normalise_spec,
    open_store,
    shard_chunks,
    stale_rows,
    unmark_done,
)
from .combine import combine_features, spec_digest  # noqa: F401 - combine_features is part of this API
from .images import ImageCache
from .pooling import check_pool, grid_shape, pool_output

log = logging.getLogger(__name__)

#: Bumped when the stored features would change for the same spec (3: per-image content digests).
FEATURE_FORMAT = 3
#: Upper bound of one Zarr chunk of a layer (rows x columns x itemsize); wide layers (SAM's
#: unpooled neck) are split into column chunks, so a chunk never needs gigabytes to write.
MAX_CHUNK_BYTES = 64 << 20


class NonFiniteFeatures(FloatingPointError, ValueError):
    """A layer gave NaN or inf (or overflows the storage dtype); the message says which images."""


def resolve_device(device: str = "auto", shard: int = 0) -> torch.device:
    """``auto``: CUDA when visible (shard k on GPU k mod the GPUs visible, so that the shards of
    one extraction spread over a multi-GPU workstation; a cluster job sees its own GPU only), else
    the CPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{shard % torch.cuda.device_count()}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)")
    return dev


def compute_dtype(precision: str, device: torch.device) -> str:
    """The dtype the network runs in: ``auto`` is bfloat16 on GPU and float32 on CPU."""
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    if precision not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"precision must be auto, float32, bfloat16 or float16, got {precision!r}")
    return precision


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[compute_dtype(precision, device)]


def feature_spec(name: str, spec: dict[str, Any], backbone: Backbone, cache: ImageCache,
                 device: torch.device | None = None) -> dict[str, Any]:
    """Everything that determines the stored values; a store is reused only if this is equal.

    The precision is resolved (``auto`` is bfloat16 on GPU, float32 on CPU): features
    computed in other precisions are never mixed in one store.
    """
    device = device or torch.device("cpu")
    return normalise_spec({
        "format": FEATURE_FORMAT,
        "backbone": name,
        "kind": spec["kind"],
        "model": spec.get("model"),
        "weights": backbone.weights_identity(),
        "input_size": backbone.input_size,
        "preprocessing": {"resize": "bicubic+antialias", "mean": backbone.mean.flatten().tolist(),
                          "std": backbone.std.flatten().tolist()},
        "precision": compute_dtype(spec.get("precision", "auto"), device),
        "layers": {layer: {"pool": cfg["pool"]} for layer, cfg in sorted(spec["layers"].items())},
        "dtype": spec.get("dtype", "float16"),
        "chunk": int(spec.get("chunk", 256)),
        "images": {"nsd_ids_sha256": cache.spec["nsd_ids_sha256"], "size": cache.spec["size"],
                   "source": cache.spec.get("source", "png")},
    })


# ----------------------------------------------------------------------------- loading


def prefetch(fn: Callable[[Any], Any], items: Iterable[Any], depth: int = 2, threads: int = 1) -> Iterator[Any]:
    """``fn(item)`` for each item, in order, computed up to ``depth`` items ahead in background threads."""
    items = iter(items)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="nsdflow-read") as pool:
        queue: deque[Future] = deque()
        for item in items:
            queue.append(pool.submit(fn, item))
            if len(queue) > depth:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


class LayerRunner:
    """Runs a backbone on uint8 batches and returns the pooled layers, on the device.

    ``runner(pixels)``: (B, H, W, 3) uint8 (host, pinned on CUDA, or device) -> {layer: (B, D)
    float32 on the device}. Resizing and normalisation run on the device in float32; the
    network under ``torch.inference_mode`` and autocast; pooling on the device.
    """

    def __init__(self, backbone: Backbone, layers: dict[str, str], device: torch.device, precision: str = "auto"):
        self.backbone = backbone
        self.pools = dict(sorted(layers.items()))
        self.layers = list(self.pools)
        self.device = device
        self.amp = _autocast_dtype(precision, device)

    def grid_shapes(self, pixels: torch.Tensor) -> dict[str, list[int]]:
        """(C, H, W) of each layer pooled with ``grid`` (the store records it), from one batch."""
        with torch.inference_mode():
            outs = self.backbone.forward_layers(self.backbone.preprocess(pixels.to(self.device)), self.layers)
        return {layer: grid_shape(outs[layer].tensor.shape[1:], outs[layer].layout, outs[layer].prefix)
                for layer, pool in self.pools.items() if pool == "grid"}

    def __call__(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            x = self.backbone.preprocess(pixels.to(self.device, non_blocking=True))
            amp = torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
            with amp:
                outs = self.backbone.forward_layers(x, self.layers)
                return {layer: pool_output(outs[layer].tensor, outs[layer].layout, pool, outs[layer].prefix)
                        for layer, pool in self.pools.items()}


def _column_chunk(rows: int, width: int, itemsize: int) -> int:
    return int(max(1, min(width, MAX_CHUNK_BYTES // max(1, rows * itemsize))))


# ----------------------------------------------------------------------------- extraction


def extract_features(
    name: str,
    spec: dict[str, Any],
    image_store: str | Path,
    store: str | Path,
    manifest: str | Path,
    device: str = "auto",
    threads: int | None = None,
    shard: int = 0,
    shards: int = 1,
    readers: int = 2,
) -> dict[str, Any]:
    """Run backbone ``name`` over its share of the image cache; see the module docstring.

    Parameters
    ----------
    spec : dict
        The backbone's config: ``kind``, ``model``, ``weights``, ``layers`` ({layer: {pool}}),
        ``dtype``, ``batch_size``, ``chunk``, ``precision``, ``input_size``.
    manifest : path
        Written last: this shard's manifest (with ``shards == 1`` it covers every chunk).
    device : str
        ``auto`` (CUDA if visible), ``cpu``, ``cuda`` or ``cuda:N``.
    threads : int, optional
        CPU threads for torch (the rule's ``threads``).
    shard, shards : int
        Extract the chunk range :func:`~nsdflow.features.chunks.shard_chunks` of ``shard`` of
        ``shards`` (independent jobs that write the same store).
    readers : int
        Threads reading the image cache ahead of the GPU.
    """
    from tqdm import tqdm

    t_start = time.time()
    if threads:
        torch.set_num_threads(int(threads))
    store, manifest = Path(store), Path(manifest)
    for layer, cfg in spec["layers"].items():
        check_pool(cfg["pool"])
    cache = ImageCache(image_store)
    dev = resolve_device(device, shard)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # events, streams and pinned-memory bookkeeping on this GPU
        torch.backends.cudnn.benchmark = True
    backbone = build_backbone(name, spec).to(dev)
    full_spec = feature_spec(name, spec, backbone, cache, dev)
    runner = LayerRunner(backbone, {layer: cfg["pool"] for layer, cfg in spec["layers"].items()}, dev,
                         full_spec["precision"])
    layers = runner.layers
    dtype = np.dtype(full_spec["dtype"])
    chunk = full_spec["chunk"]
    batch_size = int(spec.get("batch_size", 32))
    n = len(cache)
    pin = dev.type == "cuda"

    first = torch.from_numpy(cache.read(0, 1))
    dims = {layer: int(t.shape[1]) for layer, t in runner(first).items()}
    grids = runner.grid_shapes(first)

    def create(group) -> None:
        for layer in layers:
            arr = group.create_array(f"layers/{layer}", shape=(n, dims[layer]), dtype=dtype, fill_value=np.nan,
                                     chunks=(chunk, _column_chunk(chunk, dims[layer], dtype.itemsize)))
            if layer in grids:  # a row is this (C, H, W) map, flattened
                arr.attrs["grid"] = grids[layer]
        # The content digest of the image each row was computed from: a changed image is found and
        # extracted again, alone (its chunk stays done for every other row).
        group.create_array("image_digests", shape=(n,), chunks=(chunk,), dtype="uint64", fill_value=0)
        group.create_array("nsd_ids", data=cache.nsd_ids, chunks=(n,))  # last: marks the store as created

    mine = shard_chunks(n_chunks(n, chunk), shard, shards)
    with open_store(store, full_spec, create) as (group, resumed):
        arrays = {layer: group[f"layers/{layer}"] for layer in layers}
        for layer in layers:
            if arrays[layer].shape != (n, dims[layer]):
                raise RuntimeError(f"{store}/layers/{layer} is {arrays[layer].shape}, the backbone gives "
                                   f"{(n, dims[layer])}; delete the store and rerun")
        done = done_chunks(store)
        digests = group["image_digests"]
        changed = stale_rows(digests[:], cache.digests, chunk, done & set(mine))
        todo: list[tuple[int, list[int] | None]] = [(c, None) for c in mine if c not in done]
        todo += sorted(changed.items())
        n_todo = sum(chunk_rows(c, chunk, n)[1] - chunk_rows(c, chunk, n)[0] if rows is None else len(rows)
                     for c, rows in todo)
        n_mine = sum(chunk_rows(c, chunk, n)[1] - chunk_rows(c, chunk, n)[0] for c in mine)
        if len(todo) < len(mine):
            log.info("%s: resuming, %d of %d chunks of this shard already written", name, len(mine) - len(todo),
                     len(mine))
        if changed:
            log.info("%s: %d changed images to extract again (in %d chunks)", name,
                     sum(len(r) for r in changed.values()), len(changed))
            for c in changed:
                unmark_done(store, c)
        log.info("%s: shard %d of %d: chunks %d..%d, %d images to extract on %s (%s), layers %s", name, shard,
                 shards, mine.start, mine.stop - 1, n_todo, dev, full_spec["precision"],
                 ", ".join(f"{k} ({d})" for k, d in dims.items()))

        def load(item):
            c, rows = item
            lo, hi = chunk_rows(c, chunk, n)
            pixels = torch.from_numpy(cache.read(lo, hi) if rows is None else cache.take([lo + r for r in rows]))
            return c, lo, hi, rows, (pixels.pin_memory() if pin else pixels)

        def write(c: int, lo: int, hi: int, rows, block: dict[str, torch.Tensor], ready) -> None:
            if ready is not None:
                ready.synchronize()  # the device-to-host copies of this block have landed
            count = hi - lo if rows is None else len(rows)
            for layer in layers:
                values32 = block[layer][:count].numpy()
                if not np.isfinite(values32).all():
                    raise NonFiniteFeatures(f"{name}/{layer}: the network produced NaN or inf for images {lo}..{hi - 1} "
                                             f"(NSD ids {cache.nsd_ids[lo]}..{cache.nsd_ids[hi - 1]})")
                with np.errstate(over="ignore"):
                    values = values32.astype(dtype)
                if not np.isfinite(values).all():
                    raise NonFiniteFeatures(f"{name}/{layer}: features of images {lo}..{hi - 1} overflow {dtype}: "
                                             f"set backbones.{name}.dtype: float32")
                if rows is None:
                    arrays[layer][lo:hi] = values
                else:
                    arrays[layer].set_orthogonal_selection((np.asarray(rows) + lo, slice(None)), values)
            digests[lo:hi] = cache.digests[lo:hi]  # what the rows were computed from, then:
            mark_done(store, c)  # only after every layer of the chunk is on disk

        # Two host blocks: the writer writes one while the next chunk is computed into the other.
        blocks = [{layer: torch.empty((chunk, dims[layer]), dtype=torch.float32, pin_memory=pin) for layer in layers}
                  for _ in range(2 if todo else 0)]
        pending: list[Future | None] = [None, None]
        t0 = time.time()
        bar = tqdm(total=n_mine, initial=n_mine - n_todo, desc=f"extracting {name}", unit="img", mininterval=2,
                   smoothing=0.1)
        with ThreadPoolExecutor(1, thread_name_prefix="nsdflow-write") as writer:
            try:
                for i, (c, lo, hi, rows, pixels) in enumerate(prefetch(load, todo, depth=2, threads=readers)):
                    slot = i % 2
                    if pending[slot] is not None:
                        pending[slot].result()  # its previous block is written: reuse it
                    block = blocks[slot]
                    for s in range(0, len(pixels), batch_size):
                        feats = runner(pixels[s : s + batch_size])
                        for layer in layers:
                            block[layer][s : s + len(feats[layer])].copy_(feats[layer], non_blocking=True)
                        bar.update(len(feats[layers[0]]))
                    ready = None
                    if dev.type == "cuda":
                        ready = torch.cuda.Event()
                        ready.record()
                    pending[slot] = writer.submit(write, c, lo, hi, rows, block, ready)
            finally:
                for fut in pending:
                    if fut is not None:
                        fut.result()
        bar.close()
        elapsed = time.time() - t0
    rate = round(n_todo / elapsed, 1) if n_todo and elapsed > 0 else None
    info = {
        "backbone": name,
        "spec": full_spec,
        "spec_sha256": spec_digest(full_spec),
        "store": str(store),
        "n_images": n,
        "shard": shard,
        "shards": shards,
        "chunks": [mine.start, mine.stop],
        "layers": {layer: {"shape": [n, dims[layer]], "dtype": str(dtype),
                           **({"grid": grids[layer]} if layer in grids else {})} for layer in layers},
        "device": str(dev),
        "resumed": resumed,
        "extracted_images": n_todo,
        "seconds": round(elapsed, 2),
        "total_seconds": round(time.time() - t_start, 2),
        "images_per_second": rate,
    }
    log.info("%s: shard %d of %d: %d images in %.1f s (%s images/s)", name, shard, shards, n_todo, elapsed, rate)
    atomic_write_json(manifest, info)
    return info
