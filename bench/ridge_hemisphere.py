"""Benchmark: nsdflow ridge on one full hemisphere against scikit-learn and himalaya.

One real-size problem (default: 8,857 training images x 512 features -> 19,004 vertices, 10
alphas, 984 validation images: the Algonauts subj01 left hemisphere with a 10 % validation
split) is generated once, then each solver runs in its own process on the same float32 data,
so that each peak memory (the process's maximum resident set, data included) is its own:

* ``nsdflow-gcv`` / ``nsdflow-loo``: :class:`nsdflow.readouts.ridge.RidgeCV` (decomposition
  included in the time);
* ``sklearn``: ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True)`` (efficient LOO);
* ``himalaya``: ``himalaya.ridge.RidgeCV(alphas, fit_intercept=True)`` on the numpy backend
  (its default 5-fold cross-validation).

Reported: fit + predict time, peak memory, mean validation Pearson r and its difference from
scikit-learn's, how many vertices chose scikit-learn's alpha and the largest prediction
difference relative to scikit-learn's largest prediction; plus this machine's float32 matmul
GFLOP/s (the same (n x k)' (n x t) product the fit is made of), to show how far the fit is
from the hardware's limit. Run from the repository root::

    python bench/ridge_hemisphere.py                 # everything (several minutes on 2 cores)
    python bench/ridge_hemisphere.py --solvers nsdflow-gcv nsdflow-loo --targets 4000   # quick

Timings on a shared machine are noisy; the speed-ups are ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SOLVERS = ("nsdflow-gcv", "nsdflow-loo", "sklearn", "himalaya")
REPO = Path(__file__).resolve().parents[1]


def make_data(folder: Path, n_fit: int, n_val: int, p: int, t: int, seed: int = 0) -> None:
    """Correlated features (power-law spectrum), linear targets with per-vertex SNR from 0.005 to 1."""
    rng = np.random.default_rng(seed)
    n = n_fit + n_val
    mixing = rng.standard_normal((p, p)).astype(np.float32) * (np.arange(1, p + 1) ** -0.6).astype(np.float32)[:, None]
    X = rng.standard_normal((n, p), dtype=np.float32) @ mixing
    X /= X.std(axis=0)
    W = rng.standard_normal((p, t), dtype=np.float32) / np.sqrt(p)
    snr = np.exp(rng.uniform(np.log(0.005), np.log(1.0), t)).astype(np.float32)
    Y = np.lib.format.open_memmap(folder / "Y.npy", mode="w+", dtype=np.float32, shape=(n, t))
    for c in range(0, t, 2048):
        sig = X @ W[:, c:c + 2048]
        sig /= sig.std(axis=0)
        Y[:, c:c + 2048] = sig * np.sqrt(snr[c:c + 2048]) + rng.standard_normal(sig.shape, dtype=np.float32)
    Y.flush()
    np.save(folder / "X.npy", X)
    np.save(folder / "split.npy", np.array([n_fit]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(solver: str, folder: Path, alphas: np.ndarray) -> dict:
    X = np.load(folder / "X.npy")
    Y = np.load(folder / "Y.npy")
    n_fit = int(np.load(folder / "split.npy")[0])
    X_fit, X_val, Y_fit = X[:n_fit], X[n_fit:], Y[:n_fit]
    data_mb = rss_mb()
    t0 = time.perf_counter()
    if solver.startswith("nsdflow"):
        from nsdflow.readouts.ridge import RidgeCV

        model = RidgeCV(alphas, cv=solver.split("-")[1]).fit(X_fit, Y_fit)
        pred, chosen = model.predict(X_val), model.alpha_
    elif solver == "sklearn":
        from sklearn.linear_model import RidgeCV

        model = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X_fit, Y_fit)
        pred, chosen = model.predict(X_val), model.alpha_
    elif solver == "himalaya":
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV

        set_backend("numpy", on_error="raise")
        model = RidgeCV(alphas=alphas, fit_intercept=True).fit(X_fit, Y_fit)
        pred, chosen = model.predict(X_val), model.best_alphas_
    else:
        raise SystemExit(f"unknown solver {solver}")
    seconds = time.perf_counter() - t0
    np.save(folder / f"pred_{solver}.npy", np.asarray(pred, dtype=np.float32))
    np.save(folder / f"alpha_{solver}.npy", np.asarray(chosen, dtype=np.float64))
    return {"solver": solver, "seconds": seconds, "peak_mb": rss_mb(), "data_mb": data_mb}


def matmul_gflops(n: int, k: int, t: int, repeats: int = 3) -> dict:
    """float32 GFLOP/s of numpy on this machine: U'Y (the fit's main product) and a square 4096 product."""
    rng = np.random.default_rng(0)
    out = {}
    for name, (a, b) in {"UtY": ((k, n), (n, t)), "square4096": ((4096, 4096), (4096, 4096))}.items():
        A = rng.standard_normal(a, dtype=np.float32)
        B = rng.standard_normal(b, dtype=np.float32)
        A @ B
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            A @ B
            best = min(best, time.perf_counter() - t0)
        out[name] = 2 * a[0] * a[1] * b[1] / best / 1e9
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-fit", type=int, default=8857)
    ap.add_argument("--n-val", type=int, default=984)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--targets", type=int, default=19004)
    ap.add_argument("--alphas", type=int, default=10, help="alphas, log-spaced from 1e-1 to 1e8")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args()
    alphas = np.logspace(-1, 8, a.alphas)
    if a.worker:
        print(json.dumps(worker(a.worker, Path(a.data), alphas)))
        return

    with tempfile.TemporaryDirectory(prefix="ridge-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        make_data(folder, a.n_fit, a.n_val, a.features, a.targets)
        print(f"data: {a.n_fit} + {a.n_val} images x {a.features} features -> {a.targets} targets, "
              f"{len(alphas)} alphas ({time.perf_counter() - t0:.0f} s to generate)", flush=True)
        env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        results = {}
        for solver in a.solvers:
            cmd = [sys.executable, __file__, "--worker", solver, "--data", str(folder), "--alphas", str(a.alphas)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                raise SystemExit(f"{solver} failed:\n{proc.stderr[-3000:]}")
            results[solver] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {solver}: {results[solver]['seconds']:.1f} s, peak {results[solver]['peak_mb']:.0f} MB", flush=True)
        Y = np.load(folder / "Y.npy", mmap_mode="r")
        y_val = np.asarray(Y[a.n_fit:])
        ref = "sklearn" if "sklearn" in results else None
        ref_pred = np.load(folder / "pred_sklearn.npy") if ref else None
        ref_alpha = np.load(folder / "alpha_sklearn.npy") if ref else None
        for solver, res in results.items():
            pred = np.load(folder / f"pred_{solver}.npy")
            res["mean_val_r"] = float(pearson(y_val, pred).mean())
            if ref:
                res["r_minus_sklearn"] = res["mean_val_r"] - float(pearson(y_val, ref_pred).mean())
                res["same_alpha_as_sklearn"] = float((np.load(folder / f"alpha_{solver}.npy") == ref_alpha).mean())
                res["max_rel_pred_diff"] = float(np.abs(pred - ref_pred).max() / np.abs(ref_pred).max())
                res["speedup_vs_sklearn"] = results[ref]["seconds"] / res["seconds"]
            if "himalaya" in results:
                res["speedup_vs_himalaya"] = results["himalaya"]["seconds"] / res["seconds"]
        gflops = matmul_gflops(a.n_fit, a.features, a.targets)
    flops = 2 * a.n_fit * a.features * a.targets
    print(f"\nnumpy float32 matmul: {gflops['UtY']:.0f} GFLOP/s on U'Y ({flops / 1e9:.0f} GFLOP, "
          f"{flops / gflops['UtY'] / 1e9:.2f} s), {gflops['square4096']:.0f} GFLOP/s on 4096^2; "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    cols = ["seconds", "peak_mb", "mean_val_r", "r_minus_sklearn", "same_alpha_as_sklearn", "max_rel_pred_diff",
            "speedup_vs_sklearn", "speedup_vs_himalaya"]
    print("\n| solver | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for solver, res in results.items():
        cells = []
        for c in cols:
            v = res.get(c)
            cells.append("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
        print(f"| {solver} | " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "matmul_gflops": gflops, "results": results}, indent=2))


if __name__ == "__main__":
    main()
