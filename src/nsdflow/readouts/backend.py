"""Array backends for the readouts, in the himalaya style: numpy on the CPU, torch on the CPU or a GPU.

The ridge solver (:mod:`.ridge`) is written once against the few operations below; a backend
supplies them for its array type. ``numpy`` is the default on the CPU and imports nothing
heavy, so that the hundreds of per-region fit jobs stay light; ``torch`` (CUDA when visible,
else the CPU) and ``torch_cuda`` import torch only when chosen. ``auto`` picks ``torch_cuda``
when an NVIDIA GPU is visible and ``numpy`` otherwise, without importing torch to find out.

Usage::

    xp = get_backend("numpy")
    U = xp.asarray(U_np, xp.float32)
    ...
    result = xp.to_numpy(U.T @ Y)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("auto", "numpy", "torch", "torch_cuda")


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible to this process (checked without importing torch)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def resolve_backend(name: str = "auto") -> str:
    """The concrete backend ``auto`` stands for here: ``torch_cuda`` with a visible GPU, else ``numpy``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown readouts backend {name!r}; valid: {', '.join(BACKENDS)}")
    if name == "auto":
        return "torch_cuda" if gpu_visible() else "numpy"
    return name


class NumpyBackend:
    """numpy on the CPU."""

    name = "numpy"
    device = "cpu"
    float32 = np.float32
    float64 = np.float64

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def cast(self, a, dtype):
        return a.astype(dtype, copy=False)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def arange(self, n):
        return np.arange(n)

    def eigh(self, a):
        return np.linalg.eigh(a)

    def svd(self, a):
        return np.linalg.svd(a, full_matrices=False)

    def sum(self, a, axis=None):
        return a.sum(axis=axis)

    def sqrt(self, a):
        return np.sqrt(a)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def argmin(self, a, axis):
        return np.argmin(a, axis=axis)

    def take(self, a, idx, axis):
        return np.take(a, idx, axis=axis)

    def flip(self, a, axis):
        return np.flip(a, axis=axis)

    def col_sq_sums(self, a):
        """Sum of squares of each column (t,) float64; float32 products summed in blocks of rows
        (pairwise enough: the relative error stays near 1e-6 for 10,000 rows)."""
        out = np.zeros(a.shape[1], dtype=np.float64)
        for i in range(0, a.shape[0], 1024):
            b = a[i:i + 1024]
            out += np.einsum("ij,ij->j", b, b)
        return out

    def weighted_col_sq_sums(self, a, w):
        """``sum_i w_i a_ij^2`` per column (float32 products, float64 result)."""
        a2 = np.square(a)
        return (w.astype(a.dtype) @ a2).astype(np.float64)

    def col_means(self, a):
        return a.mean(axis=0, dtype=np.float64).astype(a.dtype)


class TorchBackend:
    """torch on ``device`` (a GPU, or the CPU: the CPU path is what CI tests)."""

    def __init__(self, device: str | None = None):
        import torch

        self.torch = torch
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("readouts.backend torch_cuda: no CUDA GPU is visible to torch "
                               "(CUDA_VISIBLE_DEVICES?); use numpy or torch")
        self.device = torch.device(device)
        self.name = "torch_cuda" if self.device.type == "cuda" else "torch"
        self.float32 = torch.float32
        self.float64 = torch.float64

    def asarray(self, a, dtype=None):
        t = self.torch
        if isinstance(a, t.Tensor):
            return a.to(device=self.device, dtype=dtype or a.dtype)
        arr = np.asarray(a)
        if not arr.flags.writeable:  # memory-mapped read-only: torch wants memory it may write
            arr = np.array(arr)
        return t.as_tensor(arr, device=self.device, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return a.detach().cpu().numpy() if isinstance(a, self.torch.Tensor) else np.asarray(a)

    def cast(self, a, dtype):
        return a.to(dtype)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=dtype, device=self.device)

    def arange(self, n):
        return self.torch.arange(n, device=self.device)

    def eigh(self, a):
        return self.torch.linalg.eigh(a)

    def svd(self, a):
        U, s, Vt = self.torch.linalg.svd(a, full_matrices=False)
        return U, s, Vt

    def sum(self, a, axis=None):
        return a.sum() if axis is None else a.sum(dim=axis)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def maximum(self, a, b):
        if not isinstance(b, self.torch.Tensor):
            b = self.torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return self.torch.maximum(a, b)

    def argmin(self, a, axis):
        return self.torch.argmin(a, dim=axis)

    def take(self, a, idx, axis):
        idx = self.torch.as_tensor(idx, device=a.device)
        return self.torch.index_select(a, axis, idx)

    def flip(self, a, axis):
        return self.torch.flip(a, dims=(axis,))

    def col_sq_sums(self, a):
        return (a.double() ** 2).sum(dim=0) if a.dtype != self.torch.float64 else (a**2).sum(dim=0)

    def weighted_col_sq_sums(self, a, w):
        return (w.to(a.dtype) @ (a * a)).double()

    def col_means(self, a):
        return a.double().mean(dim=0).to(a.dtype)


def get_backend(name: str = "auto") -> Any:
    """A backend object by name (see :data:`BACKENDS`); ``auto`` is resolved here."""
    name = resolve_backend(name)
    if name == "numpy":
        return NumpyBackend()
    if name == "torch":
        return TorchBackend(None)
    return TorchBackend("cuda")


def set_threads(threads: int | None) -> None:
    """Cap BLAS (and torch, if already imported) at ``threads`` threads; None leaves them alone."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
