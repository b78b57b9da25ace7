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

Reported: fit + predict time (the best of ``--repeats`` runs, each in a fresh process, with the
load average at its start), peak memory, mean validation Pearson r and its difference from
scikit-learn's, how many vertices chose scikit-learn's alpha and the largest prediction
difference relative to scikit-learn's largest prediction; plus this machine's GEMM rate on the
products the fit is made of (``bench/gemm_rate.py``, measured after the solvers, at the thread
count they ran with) and the ratio of ``nsdflow-gcv``'s time to its arithmetic's time at those
rates (:func:`gcv_arithmetic`), to show how far the fit is from the hardware's limit. Run from
the repository root::

    python bench/ridge_hemisphere.py                 # everything (several minutes on 2 cores)
    python bench/ridge_hemisphere.py --solvers nsdflow-gcv --repeats 5    # gcv against the GEMM limit
    python bench/ridge_hemisphere.py --solvers nsdflow-gcv nsdflow-loo --targets 4000   # quick

Timings on a shared machine are noisy: take the best of several runs and read the load next to it.
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


def gcv_arithmetic(n: int, p: int, t: int, m: int, n_alphas: int) -> dict[str, tuple[float, str]]:
    """FLOPs of ``RidgeCV(cv="gcv").fit(X, Y).predict(X_val)`` (all p directions kept, k = p):
    ``name -> (flops, key of the bench/gemm_rate.py product whose rate they run at)``.

    The decomposition (X'X by syrk, X V) and the criteria are float64; U'Y (with the row of ones
    that gives the means), the coefficients V B and the predictions are float32. Elementwise work
    (O(k t)) and the 512 x 512 eigendecomposition (~0.03 s) are left out.
    """
    k = p
    return {
        "X'X (f64)": (n * p * (p + 1), "XtX"),
        "U = X V / s (f64)": (2 * n * p * k, "XV"),
        "[U,1]'Y (f32)": (2 * (k + 1) * n * t, "UtY"),
        "criteria (f64)": (2 * (n_alphas + 1) * k * t, "XV"),
        "coefficients V B (f32)": (2 * p * k * t, "PB"),
        "predictions (f32)": (2 * m * p * t, "PB"),
    }


def threadpool_threads() -> int:
    """BLAS threads of this process (what the solvers' processes start with)."""
    from threadpoolctl import threadpool_info

    return max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"], default=1)


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
    ap.add_argument("--repeats", type=int, default=1, help="runs of each solver (fresh processes); the best is kept")
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
            runs = []
            for _ in range(a.repeats):
                load = os.getloadavg()[0]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode:
                    raise SystemExit(f"{solver} failed:\n{proc.stderr[-3000:]}")
                runs.append(dict(json.loads(proc.stdout.strip().splitlines()[-1]), load=load))
            results[solver] = dict(min(runs, key=lambda r: r["seconds"]), runs=runs)
            print(f"  {solver}: {results[solver]['seconds']:.2f} s (runs: "
                  + ", ".join(f"{r['seconds']:.2f} s at load {r['load']:.1f}" for r in runs)
                  + f"), peak {max(r['peak_mb'] for r in runs):.0f} MB", flush=True)
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
    from gemm_rate import blas_description, measure, ridge_products

    sys.path.insert(0, str(REPO / "src"))
    from nsdflow.readouts.ridge import BLOCK_BYTES

    print(f"\nGEMM rate, best of 5 ({blas_description()}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}):")
    block = BLOCK_BYTES["gcv"] // (4 * a.n_fit)
    rates = measure(ridge_products(a.n_fit, a.features, a.features, a.targets, a.n_val, block), threadpool_threads(), 5)
    flops = gcv_arithmetic(a.n_fit, a.features, a.targets, a.n_val, len(alphas))
    arithmetic = sum(f / (rates[key]["gflops"] * 1e9) for f, key in flops.values())
    print(f"gcv's arithmetic: {sum(f for f, _ in flops.values()) / 1e9:.0f} GFLOP ("
          + ", ".join(f"{name} {f / 1e9:.1f}" for name, (f, _) in flops.items())
          + f"), {arithmetic:.2f} s at these rates")
    if "nsdflow-gcv" in results:
        results["nsdflow-gcv"]["arithmetic_seconds"] = arithmetic
        results["nsdflow-gcv"]["x_arithmetic"] = results["nsdflow-gcv"]["seconds"] / arithmetic
        print(f"nsdflow-gcv: {results['nsdflow-gcv']['seconds']:.2f} s = "
              f"{results['nsdflow-gcv']['x_arithmetic']:.2f} x the arithmetic's time")
    cols = ["seconds", "x_arithmetic", "peak_mb", "mean_val_r", "r_minus_sklearn", "same_alpha_as_sklearn", "max_rel_pred_diff",
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
        Path(a.json).write_text(json.dumps({"args": vars(a), "gemm_rates": rates, "results": results}, indent=2))


if __name__ == "__main__":
    main()
