"""Pooling of a layer's output to one feature vector per image, on the device.

==========  =====================================================  ========================
pool        tokens (B, L, D), ``prefix`` class/register tokens     map (B, C, H, W)
            first
==========  =====================================================  ========================
``cls``     the class token (B, D)                                 (not defined)
``mean``    mean over the patch tokens (B, D)                      global average (B, C)
``avgK``    patch tokens as a grid, averaged to K x K (B, D*K*K)  averaged to K x K (B, C*K*K)
``full``    every token (B, L*D)                                   the whole map (B, C*H*W)
``grid``    the patch tokens as a D x H x W map (B, D*H*W)         the whole map (B, C*H*W)
==========  =====================================================  ========================

``grid`` keeps a layer's spatial layout for the readouts that read feature maps (the transformer
decoder, the Gaussian readout): the class and register tokens are dropped and the patch tokens
transposed to channels-first, so that every row is a (C, H, W) map flattened, whatever the
backbone (:func:`grid_shape` gives C, H, W; the store records it).

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
POOL_RE = re.compile(r"^(cls|mean|full|grid|avg[1-9][0-9]*)$")


class PoolingError(ValueError):
    pass


def check_pool(pool: str) -> None:
    if not POOL_RE.match(pool):
        raise PoolingError(f"unknown pooling {pool!r}: use cls, mean, full, grid or avgK (e.g. avg2)")


def pool_output(t: torch.Tensor, layout: str, pool: str, prefix: int = 1) -> torch.Tensor:
    """Pool one layer's output (see the module's table); returns (B, D).

    ``prefix`` (tokens only): the number of non-patch tokens before the patch tokens; ``cls``
    takes the first of them, ``mean`` and ``avgK`` use the patch tokens only.
    """
    check_pool(pool)
    t = t.float()  # pool in float32 whatever the autocast dtype
    if layout == "vector":
        if pool not in ("full", "mean"):
            if pool == "grid":
                raise PoolingError("pooling 'grid' needs a spatial layer (a map or ViT tokens); this layer gives a "
                                   "vector: use full")
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
        side = _side(patches.shape[1], prefix, pool)
        t = patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
        layout = "map"
    if layout == "map":
        if pool == "cls":
            raise PoolingError("pooling 'cls' needs a token layer (a ViT block); this layer gives a spatial map")
        if pool == "mean":
            return t.mean(dim=(2, 3))
        if pool in ("full", "grid"):
            return t.flatten(1)
        k = int(pool[3:])
        return F.adaptive_avg_pool2d(t.float(), k).flatten(1)
    raise PoolingError(f"unknown layout {layout!r}")


def _side(n_patches: int, prefix: int, pool: str) -> int:
    side = int(math.isqrt(n_patches))
    if side * side != n_patches:
        raise PoolingError(f"pooling {pool!r}: {n_patches} patch tokens (after {prefix} prefix tokens) do not form a "
                           "square grid; use cls, mean or full for this layer")
    return side


def grid_shape(shape: tuple[int, ...] | list[int], layout: str, prefix: int = 1) -> list[int]:
    """(C, H, W) of a layer pooled with ``grid``, from its output's shape without the batch axis."""
    if layout == "map":
        return [int(x) for x in shape]
    if layout == "tokens":
        length, dim = shape
        side = _side(int(length) - prefix, prefix, "grid")
        return [int(dim), side, side]
    raise PoolingError("pooling 'grid' needs a spatial layer (a map or ViT tokens)")
