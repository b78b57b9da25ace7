"""CPU benchmark of the feature stage: the extractor against the challenge tutorial's naive loop.

    python bench/extract_cpu.py [--n 512] [--n-naive 128] [--threads 2] [--out bench/results/extract_cpu.json]

On synthetic NSD-like images (425 x 425 PNG, about 370 KB each), with random weights:

* PNG decode rate on one core, and the image cache: built with worker processes, then read;
* for AlexNet (features.2, the challenge baseline's layer, full map) and CLIP ViT-B/32 (the
  image embedding): images/s and peak memory of
  - the naive loop, as the challenge tutorial does it: one image at a time, no workers, PIL
    decode + torchvision transforms (Resize((224, 224)), ToTensor, Normalize) + forward, the
    features kept in a Python list and stacked at the end;
  - nsdflow's extractor (:func:`nsdflow.features.extract.extract_features`) reading the uint8
    cache: batches, background reads, writes overlapped, features streamed to Zarr;
  each in a fresh process, so that each peak memory is its own.

Timings on a shared machine are noisy: compare the ratios, and rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from extract_common import make_images, peak_rss_mb, run_worker  # noqa: E402

MODELS = {
    "alexnet": {"kind": "alexnet", "layer": "features.2", "pool": "full"},
    "clip_vitb32": {"kind": "clip", "model": "ViT-B-32", "layer": "image", "pool": "full"},
}


def spec_of(model: str, batch_size: int = 32) -> dict:
    m = MODELS[model]
    spec = {"kind": m["kind"], "weights": {"init": "random", "seed": 0}, "layers": {m["layer"]: {"pool": m["pool"]}},
            "batch_size": batch_size, "chunk": 64, "dtype": "float16"}
    if "model" in m:
        spec["model"] = m["model"]
    return spec


# ----------------------------------------------------------------------------- workers (fresh processes)


def worker_decode(work: Path, n: int) -> dict:
    from nsdflow.features.images import decode_image

    paths = sorted((work / "png").glob("*.png"))[:n]
    t0 = time.perf_counter()
    for p in paths:
        decode_image(p)
    dt = time.perf_counter() - t0
    return {"what": "png_decode_1core", "images": len(paths), "seconds": dt, "images_per_second": len(paths) / dt,
            "peak_rss_mb": peak_rss_mb()}


def worker_cache(work: Path, n: int, workers: int) -> dict:
    import pandas as pd

    from nsdflow.features import images
    from nsdflow.features.images import build_image_cache

    images.MIN_IMAGES_PER_WORKER = 1  # use every worker asked for, however few the images
    index = pd.read_csv(work / "index.csv")
    store = work / f"cache-w{workers}.zarr"
    t0 = time.perf_counter()
    info = build_image_cache(index, store, work / f"cache-w{workers}.json", chunk=64, workers=workers)
    dt = time.perf_counter() - t0
    return {"what": f"image_cache_build_{workers}_workers", "images": info["n_images"], "seconds": dt,
            "images_per_second": info["n_images"] / dt, "peak_rss_mb": peak_rss_mb()}


def worker_read(work: Path, threads: int) -> dict:
    from nsdflow.features.extract import prefetch
    from nsdflow.features.images import ImageCache

    cache = ImageCache(work / "cache-w1.zarr")
    chunk = cache.spec["chunk"]
    ranges = [(lo, min(len(cache), lo + chunk)) for lo in range(0, len(cache), chunk)]
    best = None
    for _ in range(3):  # the first pass may come from disk, the others from the page cache
        t0 = time.perf_counter()
        total = sum(len(block) for block in prefetch(lambda r: cache.read(*r), ranges, depth=2, threads=threads))
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return {"what": f"image_cache_read_{threads}_threads", "images": total, "seconds": best,
            "images_per_second": total / best, "peak_rss_mb": peak_rss_mb()}


def worker_naive(work: Path, model: str, n: int, threads: int) -> dict:
    """The challenge tutorial's loop: one image at a time, decode + transforms + forward."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from nsdflow.features.backbones import build_backbone

    torch.set_num_threads(threads)
    m = MODELS[model]
    backbone = build_backbone(model, spec_of(model))  # the same random network as the extractor's
    net = backbone.model
    if m["kind"] == "alexnet":
        from torchvision.models.feature_extraction import create_feature_extractor

        extractor = create_feature_extractor(net, return_nodes=[m["layer"]])
        forward = lambda x: extractor(x)[m["layer"]]  # noqa: E731
    else:
        forward = net  # open_clip's image tower: the image embedding
    transform = transforms.Compose([
        transforms.Resize((224, 224)),
        transforms.ToTensor(),
        transforms.Normalize(backbone.mean.flatten().tolist(), backbone.std.flatten().tolist()),
    ])
    paths = sorted((work / "png").glob("*.png"))[:n]
    feats = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for p in paths:
            img = transform(Image.open(p).convert("RGB")).unsqueeze(0)
            feats.append(torch.flatten(forward(img), 1).numpy())
    out = np.vstack(feats)
    dt = time.perf_counter() - t0
    return {"what": f"naive_{model}", "images": len(paths), "seconds": dt, "images_per_second": len(paths) / dt,
            "feature_shape": list(out.shape), "peak_rss_mb": peak_rss_mb()}


def worker_extract(work: Path, model: str, threads: int, batch_size: int) -> dict:
    from nsdflow.features.extract import extract_features

    store = work / f"features-{model}.zarr"
    t0 = time.perf_counter()
    info = extract_features(model, spec_of(model, batch_size), work / "cache-w1.zarr", store, work / f"{model}.json",
                            device="cpu", threads=threads)
    dt = time.perf_counter() - t0
    import shutil

    shutil.rmtree(store)  # the next run extracts afresh
    return {"what": f"extractor_{model}", "images": info["n_images"], "seconds": info["seconds"],
            "seconds_with_startup": dt, "images_per_second": info["images_per_second"],
            "feature_shape": next(iter(info["layers"].values()))["shape"], "peak_rss_mb": peak_rss_mb()}


# ----------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="images")
    ap.add_argument("--n-naive", type=int, default=128,
                    help="images of the naive loop (its rate is per image; it holds every feature in memory)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (and cache workers)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        kind, work, *rest = a.worker
        work = Path(work)
        fn = {"decode": lambda: worker_decode(work, int(rest[0])),
              "cache": lambda: worker_cache(work, int(rest[0]), int(rest[1])),
              "read": lambda: worker_read(work, int(rest[0])),
              "naive": lambda: worker_naive(work, rest[0], int(rest[1]), int(rest[2])),
              "extract": lambda: worker_extract(work, rest[0], int(rest[1]), int(rest[2]))}[kind]
        print(json.dumps(fn()))
        return

    tmp = tempfile.TemporaryDirectory() if a.work is None else None
    work = a.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(f"making {a.n} synthetic 425 px PNGs in {work} ...", flush=True)
    index = make_images(work / "png", a.n)
    index.to_csv(work / "index.csv", index=False)
    png_kb = np.mean([Path(p).stat().st_size for p in index["path"]]) / 1024
    me = Path(__file__).resolve()
    results = [run_worker(me, "decode", str(work), str(min(a.n, 256)))]
    results.append(run_worker(me, "cache", str(work), str(a.n), "1"))
    results.append(run_worker(me, "cache", str(work), str(a.n), str(a.threads)))
    for threads in (1, 2):
        results.append(run_worker(me, "read", str(work), str(threads)))
    for model in a.models:
        results.append(run_worker(me, "naive", str(work), model, str(min(a.n, a.n_naive)), str(a.threads)))
        results.append(run_worker(me, "extract", str(work), model, str(a.threads), str(a.batch_size)))
    print(f"\n{a.n} images, 425 px PNG ({png_kb:.0f} KB each), {a.threads} threads, batch {a.batch_size}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| what | images | images/s | seconds | peak memory (MB) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['what']} | {r['images']} | {r['images_per_second']:.1f} | {r['seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")
    by = {r["what"]: r for r in results}
    for model in a.models:
        naive, ours = by[f"naive_{model}"], by[f"extractor_{model}"]
        cache = by[f"image_cache_build_{a.threads}_workers"]
        end_to_end = a.n / (a.n / cache["images_per_second"] + a.n / ours["images_per_second"])
        print(f"\n{model}: extractor {ours['images_per_second'] / naive['images_per_second']:.2f}x the naive loop "
              f"from the cache; {end_to_end / naive['images_per_second']:.2f}x counting the cache build "
              f"({end_to_end:.1f} images/s), which every further backbone reuses")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"n": a.n, "threads": a.threads, "batch_size": a.batch_size, "png_kb": png_kb,
                                     "results": results}, indent=2) + "\n")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
