"""The features stage's commands (rules index_images, cache_images, check_backbone, extract,
combine_features): the image index and cache, then each backbone's preflight, extraction and
combine step."""

from __future__ import annotations

from ..args import json_arg


def cmd_index_images(a) -> None:
    from ..io import save_table
    from .images import build_index

    index = build_index(a.data, a.subjects)
    save_table(index, a.out)
    print(f"{len(index)} images, {index['nsd_id'].nunique()} unique NSD ids -> {a.out}")


def cmd_cache_images(a) -> None:
    from .images import build_image_cache, read_index

    base = a.hdf5_index_base if a.hdf5_index_base == "auto" else int(a.hdf5_index_base)
    info = build_image_cache(read_index(a.index), a.store, a.out, size=a.size, chunk=a.chunk, workers=a.workers,
                             source=a.source, hdf5=a.hdf5, hdf5_dataset=a.hdf5_dataset, index_base=base,
                             compression=a.compression)
    print(f"{info['n_images']} images at {info['size']} px from {a.source} -> {a.store} "
          f"({info['images_per_second']} images/s)")


def cmd_check_backbone(a) -> None:
    from ..io import atomic_write_json
    from .preflight import check_backbone

    info = check_backbone(a.name, a.spec)
    atomic_write_json(a.out, info)
    widths = ", ".join(f"{layer} {v['pool']} -> {v['width']}" for layer, v in info["layers"].items())
    print(f"{a.name}: {info['kind']} {info['model'] or ''} at {info['input_size']} px, weights "
          f"{info['weights']['init']}; {widths} ({info['seconds']} s)")


def cmd_extract(a) -> None:
    from .extract import extract_features

    info = extract_features(a.name, a.spec, a.images, a.store, a.out, device=a.device, threads=a.threads,
                            shard=a.shard, shards=a.shards, readers=a.readers)
    print(f"{a.name}: shard {a.shard} of {a.shards}: {info['extracted_images']} of {info['n_images']} images "
          f"extracted, layers {', '.join(info['layers'])} ({info['images_per_second']} images/s on {info['device']})")


def cmd_combine_features(a) -> None:
    from .combine import combine_features  # no torch: a light job

    info = combine_features(a.store, a.shard_manifests, a.out)
    print(f"{a.store}: {info['n_images']} images, every chunk done, from {info['shards']} shard(s) -> {a.out}")


def register(add) -> None:
    s = add("index-images", cmd_index_images, "list every subject's images and NSD ids (CSV)")
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--subjects", nargs="+", required=True)
    s.add_argument("--out", required=True)

    s = add("cache-images", cmd_cache_images, "decode each unique image once into a uint8 Zarr cache")
    s.add_argument("--index", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--out", required=True, help="the cache's manifest (JSON)")
    s.add_argument("--size", type=int, default=None, help="cached side in px (default: the images' own)")
    s.add_argument("--chunk", type=int, default=64)
    s.add_argument("--workers", type=int, default=1, help="decoding processes")
    s.add_argument("--source", choices=["png", "hdf5"], default="png",
                   help="decode the PNGs, or read NSD's nsd_stimuli.hdf5 (--hdf5)")
    s.add_argument("--hdf5", default=None, help="path of nsd_stimuli.hdf5 (--source hdf5)")
    s.add_argument("--hdf5-dataset", default="imgBrick")
    s.add_argument("--hdf5-index-base", choices=["auto", "0", "1"], default="auto",
                   help="NSD id k is HDF5 row k (0) or k-1 (1); auto: compare a few PNGs with the file")
    s.add_argument("--compression", choices=["none", "zstd"], default="none")

    s = add("check-backbone", cmd_check_backbone,
            "preflight: build a backbone on the CPU and pool one image through its layers (before extraction)")
    s.add_argument("--name", required=True)
    s.add_argument("--spec", type=json_arg, required=True, help="the backbone's config as JSON")
    s.add_argument("--out", required=True, help="JSON: each layer's layout, shape and pooled width")

    s = add("extract", cmd_extract, "extract one backbone's layers for every cached image into a Zarr store")
    s.add_argument("--name", required=True)
    s.add_argument("--spec", type=json_arg, required=True, help="the backbone's config as JSON")
    s.add_argument("--images", required=True, help="image cache store")
    s.add_argument("--store", required=True)
    s.add_argument("--out", required=True, help="this shard's manifest (JSON)")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--shard", type=int, default=0, help="which shard (0-based) of --shards this job extracts")
    s.add_argument("--shards", type=int, default=1, help="independent jobs sharing the store's chunks")
    s.add_argument("--readers", type=int, default=2, help="threads reading the image cache ahead of the model")

    s = add("combine-features", cmd_combine_features,
            "check that every chunk of a feature store is done and write its manifest")
    s.add_argument("--store", required=True)
    s.add_argument("--shard-manifests", nargs="+", required=True, help="the manifest of every shard")
    s.add_argument("--out", required=True, help="the backbone's manifest (JSON)")
