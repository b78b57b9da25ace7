"""Benchmark: FBNET's ablation on the demo, through the DAG: the bottleneck network with all its
ideas, then without each one (``leak``, ``racing``, ``pretrain``), beside ridge on the same features.

The repository of the paper (HMUNACHI/FBNET) reports, on NSD with CLIP features: 41.4 for the
baseline, 46.3 for FBNET, 45.5 without the leak, 44.9 without pretraining. This bench runs the
same switches on the demo dataset (2 subjects, 300 training and 50 test images each, random-weight
AlexNet's features.12, PCA 64 shared by the subjects), with several seeds, and prints the
validation and test challenge scores of each variant (mean and spread over seeds) with the ridge
baseline::

    python bench/fbnet_ablation.py                     # 3 seeds, 2-4 minutes on 2 cores
    python bench/fbnet_ablation.py --seeds 5 --workdir /tmp/fbnet   # keep the run folder

The demo is small (240 fit images per subject): read differences under the seeds' spread as none.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]

#: The variants: name -> the bottleneck parameters that differ from FBNET's.
VARIANTS = {
    "fbnet": {},
    "no_leak": {"leak": False},
    "no_racing": {"racing": False},
    "no_pretrain": {"pretrain": False},
}


def config(seeds: int) -> dict:
    """The demo config cut to AlexNet's features.12, ridge, and each variant with each seed."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    alexnet = base["backbones"]["alexnet"]
    alexnet["layers"] = {"features.12": {"pool": "grid"}}
    fbnet = base["models"]["alexnet_fbnet"]
    models = {"ridge": {"readout": "ridge", "features": fbnet["features"], "fit_jobs": "hemisphere"}}
    for name, change in VARIANTS.items():
        for seed in range(seeds):
            models[f"{name}.s{seed}"] = {**fbnet, "params": {**fbnet["params"], **change, "seed": seed}}
            models[f"{name}.s{seed}"].pop("cv_folds", None)  # validation and test fits: no folds needed
    return {**base, "backbones": {"alexnet": alexnet}, "models": models, "ensembles": {},
            "submission": {"model": "ridge"}, "plots": {"split": "test", "brain_maps": {"enabled": False},
                                                        "attention_maps": False}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--workdir", help="run here and keep it (default: a temporary folder, removed)")
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="fbnet_ablation_"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config(a.seeds), sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", str(a.cores), "results/scores/leaderboard.csv"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"snakemake failed:\n{proc.stderr[-4000:]}")
    board = pd.read_csv(work / "results/scores/leaderboard.csv")
    score = {split: board[board["split"] == split].set_index("model")["challenge_score"] for split in ("val", "test")}
    print("| variant | seeds | validation score | spread | test score | spread |\n|---|---|---|---|---|---|")
    print(f"| ridge (same features) | 1 | {score['val']['ridge']:.2f} | | {score['test']['ridge']:.2f} | |")
    for name in VARIANTS:
        cells = []
        for split in ("val", "test"):
            s = score[split][[f"{name}.s{k}" for k in range(a.seeds)]]
            cells += [f"{s.mean():.2f}", f"{s.min():.2f}-{s.max():.2f}"]
        print(f"| {name} | {a.seeds} | {' | '.join(cells)} |")
    print(f"\n{time.perf_counter() - t0:.0f} s in all (demo data, extraction and fits), in {work}")
    if not a.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
