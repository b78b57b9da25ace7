"""Shared by the extraction benchmarks: synthetic NSD-like images and peak-memory reporting."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

NSD_SIZE = 425  # NSD's stimuli are 425 x 425 RGB


def make_images(folder: Path, n: int, size: int = NSD_SIZE, seed: int = 0):
    """``n`` PNGs of procedural scenes plus pixel noise (about 370 KB each at 425 px, like NSD's
    photographs; noiseless drawings would compress, and decode, unrealistically fast).

    Returns the image index (the columns of :func:`nsdflow.images.build_index`).
    """
    import pandas as pd
    from PIL import Image

    from nsdflow.data.demo import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        path = folder / f"img{k:05d}.png"
        if not path.exists():
            img, _ = render_scene(k, seed, size)
            img = np.clip(img.astype(np.int16) + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(path)
        rows.append(("subj01", "train", k, k, str(path)))
    return pd.DataFrame(rows, columns=["subject", "split", "row", "nsd_id", "path"])


def peak_rss_mb() -> float:
    """Peak resident memory (MB) of this process, or of its largest child process if larger
    (the image cache's decoding workers); a lower bound of the total when workers run at once."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_worker(script: Path, *args: str) -> dict:
    """Run ``script --worker ...`` in a fresh process (so its peak memory is its own); its JSON line."""
    proc = subprocess.run([sys.executable, str(script), "--worker", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
