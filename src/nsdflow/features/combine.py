"""The combine step of an extraction: every chunk done, every shard for this store; the manifest.

No torch here: the combine job is light (a local job, seconds).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, fsync_dir, read_json
from .chunks import done_dir, missing_chunks, n_chunks, normalise_spec, read_spec


def spec_digest(spec: dict[str, Any]) -> str:
    """A short hash of a store's spec, recorded in each shard's manifest."""
    return hashlib.sha256(json.dumps(normalise_spec(spec), sort_keys=True).encode()).hexdigest()[:16]


def combine_features(store: str | Path, shard_manifests: list[str | Path], manifest: str | Path) -> dict[str, Any]:
    """Check that every shard wrote the same store and every chunk is done; write the manifest.

    Raises RuntimeError naming the chunks (and their shard) that are not done, or the shard
    whose manifest records other settings than the store.
    """
    store = Path(store)
    spec = read_spec(store)
    if spec is None:
        raise RuntimeError(f"{store} is not a feature store; rerun its extract jobs")
    digest = spec_digest(spec)
    shards = [read_json(p) for p in shard_manifests]
    for path, info in zip(shard_manifests, shards):
        if info.get("spec_sha256") != digest:
            raise RuntimeError(f"{path} was written for other settings than {store} now holds (the store was rebuilt "
                               "after that shard ran); rerun the extract jobs")
    n, chunk = spec_n_images(store), spec["chunk"]
    missing = missing_chunks(store, n, chunk)
    if missing:
        counts = sorted({s["shard"] for s in shards for c in missing if s["chunks"][0] <= c < s["chunks"][1]})
        raise RuntimeError(f"{store}: {len(missing)} of {n_chunks(n, chunk)} chunks are not done (e.g. {missing[:5]}), "
                           f"from shards {counts or '(none listed)'}; rerun those extract jobs")
    fsync_dir(done_dir(store))  # the markers this manifest vouches for reach the disk before it does
    extracted = sum(s["extracted_images"] for s in shards)
    seconds = max((s["seconds"] for s in shards), default=0.0)
    info = {
        "backbone": shards[0]["backbone"] if shards else store.stem,
        "spec": spec,
        "spec_sha256": digest,
        "store": str(store),
        "n_images": n,
        "layers": shards[0]["layers"] if shards else {},
        "shards": len(shards),
        "device": ", ".join(sorted({s["device"] for s in shards})),
        "extracted_images": extracted,
        "seconds": seconds,
        "images_per_second": round(extracted / seconds, 1) if extracted and seconds > 0 else None,
        "per_shard": [{k: s[k] for k in ("shard", "chunks", "device", "extracted_images", "seconds",
                                          "images_per_second")} for s in shards],
    }
    atomic_write_json(manifest, info)
    return info


def spec_n_images(store: str | Path) -> int:
    import zarr

    return int(zarr.open_array(Path(store) / "nsd_ids", mode="r").shape[0])

