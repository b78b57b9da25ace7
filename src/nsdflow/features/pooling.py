"""Pooling of a layer's output to one feature vector per image, on the device.

==========  =====================================================  ========================
pool        tokens (B, L, D), ``prefix`` class/register tokens     map (B, C, H, W)
            first
==========  =====================================================  ========================
``cls``     the class token (B, D)                                 (not defined)
``mean``    mean over the patch tokens (B, D)                      global average (B, C)
``avgK``    patch tokens as a grid, averaged to K x K (B, D*K*K)  averaged to K x K (B, C*K*K)
``full``    every token (B, L*D)                                   the whole map (B, C*H*W)
==========  =====================================================  ========================

A ``vector`` output (B, D) takes ``full`` (or ``mean``, which leaves it as it is).
Pooling runs on the device before anything is copied to the host: SAM's 256 x 64 x 64 neck,
2 MB per image in float16, leaves the GPU as 256 x K x K.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

#: The pooling names (the schema's pattern for ``pool`` is this one, tested).
POOL_RE = re.compile(r"^(cls|mean|full|avg[1-9][0-9]*)$")


class PoolingError(ValueError):
    pass


def check_pool(pool: str) -> None:
    if not POOL_RE.match(pool):
        raise PoolingError(f"unknown pooling {pool!r}: use cls, mean, full or avgK (e.g. avg2)")


def pool_output(t: torch.Tensor, layout: str, pool: str, prefix: int = 1) -> torch.Tensor:
    """Pool one layer's output (see the module's table); returns (B, D).

    ``prefix`` (tokens only): the number of non-patch tokens before the patch tokens; ``cls``
    takes the first of them, ``mean`` and ``avgK`` use the patch tokens only.
    """
    check_pool(pool)
    t = t.float()  # pool in float32 whatever the autocast dtype
    if layout == "vector":
        if pool not in ("full", "mean"):
            raise PoolingError(f"pooling {pool!r} needs a spatial layer; this layer gives a vector: use full")
        return t.flatten(1)
    if layout == "tokens":
        if pool == "cls":
            return t[:, 0]
        if pool == "full":
            return t.flatten(1)
        patches = t[:, prefix:]
        if pool == "mean":
            return patches.mean(dim=1)
        side = int(math.isqrt(patches.shape[1]))
        if side * side != patches.shape[1]:
            raise PoolingError(f"pooling {pool!r}: {patches.shape[1]} patch tokens (after {prefix} prefix tokens) do "
                               "not form a square grid; use cls, mean or full for this layer")
        t = patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
        layout = "map"
    if layout == "map":
        if pool == "cls":
            raise PoolingError("pooling 'cls' needs a token layer (a ViT block); this layer gives a spatial map")
        if pool == "mean":
            return t.mean(dim=(2, 3))
        if pool == "full":
            return t.flatten(1)
        k = int(pool[3:])
        return F.adaptive_avg_pool2d(t.float(), k).flatten(1)
    raise PoolingError(f"unknown layout {layout!r}")
