"""Extract backbone features for every unique image into one resumable Zarr store per backbone.

Store layout (``results/features/<backbone>.zarr``)::

    zarr.json        attrs["nsdflow_spec"]: model, weights identity, preprocessing, layers, dtype
    nsd_ids          (N,) int64, ascending: row i holds NSD image nsd_ids[i]
    layers/<layer>   (N, D) float16 or float32, one chunk = ``chunk`` images, NaN until written
    done/<c>         empty file: chunk c of every layer is written

A store whose recorded spec differs from the requested one is deleted and re-extracted, so
old and new features never mix. The rule's declared output is a small JSON manifest written
last; a killed run leaves no manifest and resumes from the last chunk marked done.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..images import ImageCache, _open_resumable
from ..io import atomic_write_json
from .backbones import build_backbone
from .pooling import check_pool, pool_output

log = logging.getLogger(__name__)

#: Bumped when the stored features would change for the same spec.
FEATURE_FORMAT = 1


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)")
    return dev


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def feature_spec(name: str, spec: dict[str, Any], backbone, cache: ImageCache) -> dict[str, Any]:
    """Everything that determines the stored values; a store is reused only if this is equal."""
    return {
        "format": FEATURE_FORMAT,
        "backbone": name,
        "kind": spec["kind"],
        "model": spec.get("model"),
        "weights": backbone.weights_identity(),
        "input_size": backbone.input_size,
        "preprocessing": {"resize": "bicubic+antialias", "mean": backbone.mean.flatten().tolist(),
                          "std": backbone.std.flatten().tolist()},
        "precision": spec.get("precision", "auto"),
        "layers": {layer: {"pool": cfg["pool"]} for layer, cfg in sorted(spec["layers"].items())},
        "dtype": spec.get("dtype", "float16"),
        "chunk": int(spec.get("chunk", 256)),
        "images": {"nsd_ids_sha256": cache.spec["nsd_ids_sha256"], "size": cache.spec["size"]},
    }


def extract_features(
    name: str,
    spec: dict[str, Any],
    image_store: str | Path,
    store: str | Path,
    manifest: str | Path,
    device: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Run backbone ``name`` over every image of the cache; see the module docstring for the store.

    Parameters
    ----------
    spec : dict
        The backbone's config: ``kind``, ``model``, ``weights``, ``layers`` ({layer: {pool}}),
        ``dtype``, ``batch_size``, ``chunk``, ``precision``, ``input_size``.
    device : str
        ``auto`` (CUDA if visible), ``cpu``, ``cuda`` or ``cuda:N``.
    threads : int, optional
        CPU threads for torch (the rule's ``threads``).
    """
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(int(threads))
    store, manifest = Path(store), Path(manifest)
    for layer, cfg in spec["layers"].items():
        check_pool(cfg["pool"])
    cache = ImageCache(image_store)
    dev = resolve_device(device)
    backbone = build_backbone(name, spec).to(dev)
    full_spec = feature_spec(name, spec, backbone, cache)
    layers = sorted(spec["layers"])
    pools = {layer: spec["layers"][layer]["pool"] for layer in layers}
    dtype = np.dtype(full_spec["dtype"])
    chunk = full_spec["chunk"]
    batch_size = int(spec.get("batch_size", 32))
    amp = _autocast_dtype(full_spec["precision"], dev)
    n = len(cache)

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(pixels)
        if dev.type == "cuda":
            x = x.pin_memory().to(dev, non_blocking=True)
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            outs = backbone(x, layers)
            return {layer: pool_output(outs[layer].tensor, outs[layer].layout, pools[layer]).float().cpu().numpy()
                    for layer in layers}

    group = _open_resumable(store, full_spec)
    if "layers" not in group:
        probe = run(np.asarray(cache.pixels[0:1]))
        group.create_array("nsd_ids", data=cache.nsd_ids, chunks=(n,))
        for layer in layers:
            group.create_array(f"layers/{layer}", shape=(n, probe[layer].shape[1]), chunks=(chunk, probe[layer].shape[1]),
                               dtype=dtype, fill_value=np.nan)
    arrays = {layer: group[f"layers/{layer}"] for layer in layers}
    done_dir = store / "done"
    done_dir.mkdir(exist_ok=True)
    n_chunks = -(-n // chunk)
    todo = [c for c in range(n_chunks) if not (done_dir / str(c)).exists()]
    n_todo = sum(min(chunk, n - c * chunk) for c in todo)
    if len(todo) < n_chunks:
        log.info("%s: resuming, %d of %d chunks already written", name, n_chunks - len(todo), n_chunks)

    def write(c: int, block: dict[str, np.ndarray]) -> None:
        for layer in layers:
            values = block[layer].astype(dtype)
            if not np.isfinite(values).all():
                hint = ("it overflows float16: set dtype: float32 for this backbone"
                        if np.isfinite(block[layer]).all() else "the network itself produced NaN or inf")
                raise FloatingPointError(f"{name}/{layer}: non-finite features in images {c * chunk}.."
                                         f"{c * chunk + len(values) - 1}; {hint}")
            arrays[layer][c * chunk : c * chunk + len(values)] = values
        (done_dir / str(c)).touch()  # only after every layer of the chunk is on disk

    t0 = time.time()
    bar = tqdm(total=n, initial=n - n_todo, desc=f"extracting {name}", unit="img", mininterval=2, smoothing=0.1)
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        read = lambda c: np.asarray(cache.pixels[c * chunk : min(n, (c + 1) * chunk)])  # noqa: E731
        pending_read = reader.submit(read, todo[0]) if todo else None
        pending_write = None
        for i, c in enumerate(todo):
            pixels = pending_read.result()
            if i + 1 < len(todo):
                pending_read = reader.submit(read, todo[i + 1])  # decode the next chunk while this one runs
            parts = []
            for s in range(0, len(pixels), batch_size):
                parts.append(run(pixels[s : s + batch_size]))
                bar.update(min(batch_size, len(pixels) - s))
            block = {layer: np.concatenate([p[layer] for p in parts]) for layer in layers}
            if pending_write is not None:
                pending_write.result()
            pending_write = writer.submit(write, c, block)  # overlap the write with the next chunk
        if pending_write is not None:
            pending_write.result()
    bar.close()
    elapsed = time.time() - t0
    info = {
        "spec": full_spec,
        "store": str(store),
        "n_images": n,
        "layers": {layer: {"shape": list(arrays[layer].shape), "dtype": str(dtype)} for layer in layers},
        "device": str(dev),
        "extracted_images": n_todo,
        "seconds": round(elapsed, 2),
        "images_per_second": round(n_todo / elapsed, 1) if n_todo and elapsed > 0 else None,
    }
    atomic_write_json(manifest, info)
    return info
