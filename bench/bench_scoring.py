"""Time the scoring stage at the real data's size: per-vertex correlations and the summary tables.

    python bench/bench_scoring.py            # one line per measurement: best of 3, CPU seconds

Correlations: subj01 rh (20,544 vertices) against 159 test images (subj01's test set), 395 (the
largest test set) and 1,968 validation images (a 0.2 split of 9,841). Summary: two models over
all eight subjects' vertices (631,994 rows), every ROI class, two splits.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from nsdflow.data.layout import REAL_COUNTS, ROI_CLASSES
from nsdflow.evaluate.scoring import pearson_columns
from nsdflow.evaluate.summary import summarize


def best_of(fn, repeat=3):
    """Best CPU time of ``repeat`` calls (CPU, not wall: the work is single-threaded and the
    machine may be shared)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    for n in (159, 395, 1968):
        y = rng.standard_normal((n, 20_544), dtype=np.float32)
        p = y + rng.standard_normal(y.shape, dtype=np.float32)
        print(f"pearson_columns {n:5d} images x 20,544 vertices: {best_of(lambda: pearson_columns(y, p)):.3f} s CPU")
    frames = []
    for model in ("a", "b"):
        for subject, counts in REAL_COUNTS.items():
            for hemi in ("lh", "rh"):
                n = counts[hemi]
                d = {"model": model, "subject": subject, "hemi": hemi, "vertex": np.arange(n)}
                for cls, names in ROI_CLASSES.items():
                    d[cls] = np.array(["Unknown", *names], dtype=object)[rng.integers(0, len(names) + 1, n)]
                for split in ("val", "test"):
                    d[f"r_{split}"] = rng.uniform(-0.2, 0.8, n)
                    d[f"score_{split}"] = rng.uniform(0, 100, n)
                    d[f"chance_{split}"] = rng.uniform(0, 10, n)
                d["nc"] = rng.uniform(0, 0.8, n)
                frames.append(pd.DataFrame(d))
    vertices = pd.concat(frames, ignore_index=True)
    print(f"summarize {len(vertices):,} vertex rows (2 models, 8 subjects, 2 splits): "
          f"{best_of(lambda: summarize(vertices), repeat=2):.2f} s CPU")


if __name__ == "__main__":
    main()
