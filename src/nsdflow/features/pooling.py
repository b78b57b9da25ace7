"""Pooling of a layer's output to one feature vector per image, on the device.

==========  =====================================================  ========================
pool        tokens (B, L, D), class token first                    map (B, C, H, W)
==========  =====================================================  ========================
``cls``     the class token (B, D)                                 (not defined)
``mean``    mean over the patch tokens (B, D)                      global average (B, C)
``avgK``    patch tokens as a grid, averaged to K x K (B, D*K*K)  averaged to K x K (B, C*K*K)
``full``    every token (B, L*D)                                   the whole map (B, C*H*W)
==========  =====================================================  ========================

A ``vector`` output (B, D) takes ``full`` (or ``mean``, which leaves it as it is).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

POOL_RE = re.compile(r"^(cls|mean|full|avg([1-9][0-9]*))$")


class PoolingError(ValueError):
    pass


def check_pool(pool: str) -> None:
    if not POOL_RE.match(pool):
        raise PoolingError(f"unknown pooling {pool!r}: use cls, mean, full or avgK (e.g. avg2)")


def pool_output(t: torch.Tensor, layout: str, pool: str) -> torch.Tensor:
    """Pool one layer's output (see the module's table); returns (B, D) float."""
    check_pool(pool)
    if layout == "vector":
        if pool not in ("full", "mean"):
            raise PoolingError(f"pooling {pool!r} needs a spatial layer; this layer gives a vector: use full")
        return t.flatten(1)
    if layout == "tokens":
        if pool == "cls":
            return t[:, 0]
        if pool == "full":
            return t.flatten(1)
        patches = t[:, 1:]
        if pool == "mean":
            return patches.mean(dim=1)
        side = int(round(math.sqrt(patches.shape[1])))
        if side * side != patches.shape[1]:  # e.g. extra register tokens: keep the last side**2
            side = int(math.isqrt(patches.shape[1]))
            patches = patches[:, -side * side :]
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
