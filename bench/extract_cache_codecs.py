"""Image-cache chunk compression: disk size and read rate of 425 px uint8 images per codec.

    python bench/extract_cache_codecs.py [--n 512] [--work DIR]

Why ``images.compression`` defaults to ``none``: natural images shrink little losslessly, and
an uncompressed chunk reads at memory speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from extract_common import make_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args()

    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    from nsdflow.features.images import decode_image

    tmp = tempfile.TemporaryDirectory() if a.work is None else None
    work = a.work or Path(tmp.name)
    index = make_images(work / "png", min(a.n, 64))
    block = np.stack([decode_image(p) for p in index["path"]])
    pixels = np.concatenate([block] * -(-a.n // len(block)))[: a.n]
    mem = time.perf_counter()
    for _ in range(3):
        pixels.copy()
    copy_rate = 3 * a.n / (time.perf_counter() - mem)
    print(f"{a.n} images of 425 px ({pixels.nbytes / 2**20:.0f} MB); an in-memory copy: {copy_rate:.0f} images/s\n")
    print("| compression | MB on disk | write images/s | read images/s (chunk by chunk, best of 3) |\n|---|---|---|---|")
    for name, codec in [("none", None), ("zstd (zarr default)", "auto"), ("zstd level 1", ZstdCodec(level=1)),
                        ("blosc lz4 bitshuffle", BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"))]:
        store = work / "codec.zarr"
        shutil.rmtree(store, ignore_errors=True)
        kw = {} if codec == "auto" else {"compressors": codec}
        z = zarr.create_array(store, shape=pixels.shape, chunks=(64, 425, 425, 3), dtype="uint8", fill_value=0, **kw)
        t0 = time.perf_counter()
        z[:] = pixels
        write = a.n / (time.perf_counter() - t0)
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
        z = zarr.open_array(store, mode="r")
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for lo in range(0, a.n, 64):
                np.asarray(z[lo : lo + 64])
            best = min(best, time.perf_counter() - t0)
        print(f"| {name} | {size:.0f} | {write:.0f} | {a.n / best:.0f} |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
