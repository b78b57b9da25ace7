"""Benchmark: this machine's GEMM rate (numpy's BLAS) on the products a ridge fit is made of.

Ridge ``gcv`` on a hemisphere (``bench/ridge_hemisphere.py``) is, arithmetically, the float32
product ``[U, 1]'Y`` ((k+1 x n) @ (n x t): U stored (n, k+1), Y read in place as column blocks
of a row-major (n, t) matrix), the float32 predictions (``P @ B``: (m x k) @ (k x t)) and a
float64 decomposition of the design (``X'X`` and ``X V``). This prints numpy's GFLOP/s on those
shapes, laid out in memory as the fit lays them out, best of ``--repeats`` runs after a warm-up,
at each thread count, with the 1-minute load average next to each number (a shared machine's
other work lowers the rate: rerun when the load is low). Run from the repository root::

    python bench/gemm_rate.py                           # the ridge hemisphere's shapes, 1 and all threads
    python bench/gemm_rate.py --threads 2 --repeats 10

``bench/ridge_hemisphere.py`` imports :func:`ridge_products` and :func:`measure` to set the fit's
time against the arithmetic's time at the rate measured in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def ridge_products(n: int, p: int, k: int, t: int, m: int, block: int, seed: int = 0) -> dict[str, tuple]:
    """``key -> (description, A, B, flops)`` for the products of a ridge fit, in the fit's memory layouts.

    n images, p features, k directions, t targets, m predicted rows, ``block`` targets per U'Y product.
    Keys: ``UtY`` (a block, as the fit runs it), ``UtY_all`` (all targets at once), ``PB``, ``XtX``, ``XV``.
    """
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((n, t), dtype=np.float32)  # row-major targets, read by column blocks
    U1 = rng.standard_normal((n, k + 1), dtype=np.float32)  # [U, 1], C order: its transpose is read
    P = rng.standard_normal((m, k), dtype=np.float32)
    B = rng.standard_normal((k, t), dtype=np.float32)
    X64 = rng.standard_normal((n, p))
    V64 = rng.standard_normal((p, k))
    b = min(block, t)
    return {
        "UtY": (f"[U,1]'Y f32 ({k + 1}x{n}) @ ({n}x{b}), a column block of Y in place", U1.T, Y[:, :b],
                2 * (k + 1) * n * b),
        "UtY_all": (f"[U,1]'Y f32 ({k + 1}x{n}) @ ({n}x{t}), all of Y", U1.T, Y, 2 * (k + 1) * n * t),
        "PB": (f"P B     f32 ({m}x{k}) @ ({k}x{t})", P, B, 2 * m * k * t),
        "XtX": (f"X'X     f64 ({p}x{n}) @ ({n}x{p}), syrk", X64.T, X64, n * p * (p + 1)),
        "XV": (f"X V     f64 ({n}x{p}) @ ({p}x{k})", X64, V64, 2 * n * p * k),
    }


def best_seconds(fn, repeats: int) -> tuple[float, float]:
    """Best wall time of ``fn()`` over ``repeats`` runs after a warm-up, and the 1-minute load average after."""
    fn()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best, os.getloadavg()[0]


def measure(products: dict[str, tuple], threads: int, repeats: int, echo: bool = True) -> dict[str, dict]:
    """GFLOP/s of each product at ``threads`` BLAS threads: ``key -> {product, threads, seconds, gflops, load}``."""
    out = {}
    with threadpool_limits(threads, user_api="blas"):
        for key, (name, A, B, flops) in products.items():
            seconds, load = best_seconds(lambda: A @ B, repeats)
            out[key] = {"product": name, "threads": threads, "seconds": seconds, "gflops": flops / seconds / 1e9,
                        "load": load}
            if echo:
                print(f"  {name:60s} {threads} thr: {out[key]['gflops']:6.1f} GFLOP/s ({seconds:.3f} s, load {load:.2f})",
                      flush=True)
    return out


def blas_description() -> str:
    libs = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i['num_threads']} threads)"
            for i in threadpool_info() if i["user_api"] == "blas"]
    return f"numpy {np.__version__}, BLAS: {'; '.join(libs)}; {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8857, help="training images")
    ap.add_argument("--p", type=int, default=512, help="features")
    ap.add_argument("--k", type=int, default=512, help="directions of the decomposition")
    ap.add_argument("--t", type=int, default=19004, help="targets (vertices)")
    ap.add_argument("--m", type=int, default=984, help="predicted images")
    ap.add_argument("--block", type=int, default=7576, help="targets per U'Y product (ridge's gcv block here)")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and all)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    print(blas_description())
    products = ridge_products(a.n, a.p, a.k, a.t, a.m, a.block)
    results = [measure(products, th, a.repeats) for th in a.threads or sorted({1, os.cpu_count() or 1})]
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))


if __name__ == "__main__":
    main()
