"""Benchmark: one training step of the Gaussian readout and of FBNET's network at full size, on the CPU.

Random inputs, torch only (no DAG, no store): the Gaussian readout with 19,004 vertices (one
hemisphere) on AlexNet's three conv levels and on DINOv2's 768 x 16 x 16 grid, batch 32, Adam;
FBNET's 300 -> 6,000 -> 2 x 75 network with the leak, the racing loss and Lion, batch 128. Prints
the median step time of 3 (5) steps after a warm-up, the process's peak memory and what an epoch
costs at NSD's sizes::

    python bench/trained_steps.py
"""

import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nsdflow.readouts.bottleneck_net import BottleneckNet, Lion, racing_loss  # noqa: E402
from nsdflow.readouts.gaussian_net import GaussianReadout  # noqa: E402

#: Training images of one subject, and of the 8 subjects together (NSD).
SUBJECT_IMAGES, ALL_IMAGES = 8857, 70000


def median_step(name: str, step, n: int = 3) -> float:
    """Median wall time of ``n`` calls of ``step`` after one warm-up call; prints it with the peak memory."""
    step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[n // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: {median:.3f} s per step (median of {n}), peak RSS {peak:.0f} MB", flush=True)
    return median


def gaussian(label: str, shapes, vertices: int = 19004, batch: int = 32) -> None:
    model = GaussianReadout(shapes, vertices)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    maps, y = [torch.randn(batch, *s) for s in shapes], torch.randn(batch, vertices)

    def step():
        optimizer.zero_grad()
        ((model(maps) - y) ** 2).mean().backward()
        optimizer.step()

    seconds = median_step(f"gaussian {label}, batch {batch}, {vertices} vertices", step)
    print(f"  one epoch of {SUBJECT_IMAGES:,} images: {SUBJECT_IMAGES / batch * seconds / 60:.1f} min per hemisphere")


def fbnet(batch: int = 128) -> None:
    net = BottleneckNet(300, 6000, 75, 0.2, True, 0.02, 0.002)
    optimizer = Lion(net.parameters(), 1e-4)
    x, noise, leak = torch.randn(batch, 300), torch.randn(batch, 150), torch.randn(batch, 150)
    y_lh, y_rh = torch.randn(batch, 75), torch.randn(batch, 75)

    def step():
        optimizer.zero_grad()
        pred_lh, pred_rh = net(x, noise, leak)
        racing_loss(pred_lh, y_lh, pred_rh, y_rh).backward()
        optimizer.step()

    seconds = median_step(f"FBNET 300 -> 6000 -> 2 x 75, batch {batch}", step, 5)
    print(f"  one pretraining epoch over 8 subjects' ~{ALL_IMAGES:,} images: {ALL_IMAGES / batch * seconds:.0f} s; "
          f"one subject's fine-tuning epoch ({SUBJECT_IMAGES:,}): {SUBJECT_IMAGES / batch * seconds:.1f} s")


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    gaussian("AlexNet features.2 + .5 + .12 (64x27x27, 192x13x13, 256x6x6)", [(64, 27, 27), (192, 13, 13), (256, 6, 6)])
    gaussian("DINOv2 grid (768x16x16)", [(768, 16, 16)])
    fbnet()


if __name__ == "__main__":
    main()
