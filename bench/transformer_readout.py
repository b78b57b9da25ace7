"""Time training steps of the transformer readout at full size: ROI queries and vertex queries.

    python bench/transformer_readout.py                  # CPU; about 2-3 minutes on 2 cores
    python bench/transformer_readout.py --device cuda    # a GPU (bf16 autocast, as in training)

One hemisphere of subj01 (19,004 vertices, ``--vertices``), C = 768 input channels, grids of 16 x 16
(224 px) and 31 x 31 (434 px, the published input), dropout 0.1, AdamW and clipping 0.1 through
``train_epochs``. ROI queries: ``streams``, 7 + 1 queries, d_model 768; vertex queries: one per
vertex, d_model 768 and 128 (ffn 2048 throughout). Batch 32, except vertex queries on the CPU,
which do not fit in this machine's memory at 32 (``--vertex-batch``, default 1 on the CPU: with
attention dropout the CPU has no fused attention kernel, so each vertex query's attention weights
are formed, about 1.5 GB per image at 16 x 16 and d 128; CUDA's memory-efficient kernel forms none).

Each configuration runs in its own process, so that its peak memory is its own: the peak
resident set (``ru_maxrss``) and what it adds to the process after imports on the CPU;
``torch.cuda.max_memory_allocated`` on a GPU. Times: the median of ``--steps`` steps after one
warm-up step (``--steps``, default 1), per step and per image, wall-clock; and the process's CPU
seconds per step (all threads), which a shared machine inflates less. Features are random and already on the device: the
reading of a feature store is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

CONFIGS = [
    # name, queries, grid side, d_model
    ("roi 16x16 d768", "streams", 16, 768),
    ("roi 31x31 d768", "streams", 31, 768),
    ("vertex 16x16 d128", "vertex", 16, 128),
    ("vertex 16x16 d768", "vertex", 16, 768),
    ("vertex 31x31 d128", "vertex", 31, 128),
]


def run_one(queries: str, side: int, d_model: int, batch: int, vertices: int, steps: int, device: str) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from nsdflow.readouts.training import train_epochs
    from nsdflow.readouts.transformer_net import BrainDecoder

    dev = torch.device(device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is KiB on Linux)
    if queries == "vertex":
        owner = np.arange(vertices)
    else:  # 7 streams and the rest, in runs of the sizes' order of magnitude
        owner = np.sort(np.random.default_rng(0).integers(0, 8, vertices))
    torch.manual_seed(0)
    model = BrainDecoder(owner, 768, side, side, d_model=d_model, heads=16, ffn=2048, layers=1, dropout=0.1).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x = torch.randn(batch, 768, side, side, device=dev)
    y = torch.randn(batch, vertices, device=dev)
    stamps, cpu = [], []

    def batches(epoch, generator):
        for _ in range(steps + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            yield x, y

    def step(batch):
        xb, yb = batch
        return F.mse_loss(model(xb).float(), yb)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_epochs(model, opt, step, batches, epochs=1, clip=0.1, device=dev, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    cpu.append(time.process_time())
    per_step = float(np.median(np.diff(stamps)[1:]))  # the first step is the warm-up
    out = {"step_s": per_step, "cpu_s": float(np.median(np.diff(cpu)[1:])), "image_ms": 1000 * per_step / batch,
           "batch": batch,
           "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    if dev.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        out.update(peak_gib=peak, added_gib=peak - base)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vertices", type=int, default=19_004)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vertex-batch", type=int, default=None, help="batch of vertex queries (default: 1 on the "
                    "CPU, --batch on a GPU)")
    ap.add_argument("--steps", type=int, default=1, help="timed steps per configuration (after one warm-up)")
    ap.add_argument("--only", default=None, help="run only the configurations whose name contains this")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: one configuration
    args = ap.parse_args()
    if args.one:
        queries, side, d_model, batch = json.loads(args.one)
        print(json.dumps(run_one(queries, side, d_model, batch, args.vertices, args.steps, args.device)))
        return
    vertex_batch = args.vertex_batch or (1 if args.device == "cpu" else args.batch)
    print("$", shlex.join([Path(sys.executable).name, *sys.argv]))
    import torch

    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{args.vertices} vertices, C 768, ffn 2048, 16 heads, 1 layer, dropout 0.1")
    memory = "peak GiB (added)" if args.device == "cpu" else "peak GiB allocated"
    print(f"| configuration | queries | batch | s / step | CPU s / step | ms / image | {memory} | parameters (M) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, queries, side, d_model in CONFIGS:
        if args.only and args.only not in name:
            continue
        batch = vertex_batch if queries == "vertex" else args.batch
        child = [sys.executable, __file__, "--device", args.device, "--vertices", str(args.vertices),
                 "--steps", str(args.steps), "--one", json.dumps([queries, side, d_model, batch])]
        done = subprocess.run(child, check=False, capture_output=True, text=True, cwd=REPO)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode} |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        n_queries = args.vertices if queries == "vertex" else 8
        mem = f"{r['peak_gib']:.2f} ({r['added_gib']:.2f})" if "added_gib" in r else f"{r['peak_gib']:.2f}"
        print(f"| {name} | {n_queries} | {batch} | {r['step_s']:.2f} | {r['cpu_s']:.2f} | {r['image_ms']:.0f} | {mem} | "
              f"{r['params_M']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
