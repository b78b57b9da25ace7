"""The Gaussian spatial readout (``readout: gaussian``): each vertex reads feature maps at one learned position.

After Lurz et al. 2020, "Generalization in data-driven models of primary visual cortex" (the
``FullGaussian2d`` readout of sinzlab/neuralpredictors), on one or more levels of a backbone's
feature maps, (n, C_l, H_l, W_l) of different sizes (the multi-level input of Dynamic-V1FM's
hierarchical readout, SENSORIUM 2023):

* vertex v has a position ``mu_v`` in [-1, 1]^2 (x = across the columns, y = down the rows,
  the convention of ``F.grid_sample``; -1 and 1 are the centres of the first and last pixel,
  ``align_corners=True`` as in neuralpredictors) shared by every level;
* in training, each image reads at ``mu_v + sigma_v * N(0, 1)`` (clamped to the map), a new draw
  per image and vertex; ``sigma_v`` (per axis) is learned with the rest and shrinks because the
  jitter costs loss; in evaluation the readout is at ``mu_v`` itself;
* every level is sampled bilinearly there, the channels concatenated (sum_l C_l of them) and
  combined with the vertex's own weights and bias;
* ``hidden > 0`` adds the hierarchical variant's small nonlinear stage: per level, a linear map
  of the sampled channels to ``hidden`` units shared by all vertices, then ELU, and per-vertex
  weights on those units, added to the linear readout (those weights start at zero, so the
  initial model is the linear one).

Gradient descent from positions near the centre learns nothing (on the demo, in 17 minutes), so
positions and weights start from an exhaustive search (:func:`grid_search_init`): every vertex's
best position on a P x P grid (optionally also a Gaussian pooling width), each candidate with its
ridge fit and each vertex's alpha chosen by generalised cross-validation, kept by the lowest GCV
error. Training (:func:`fit_predict`, through :func:`nsdflow.readouts.training.train_epochs`)
then refines positions and weights on minibatches with each vertex's ridge penalty, and keeps the
epoch best on an inner split of the fit images, or the search's own model unless that epoch beats it
there by more than the inner images' noise (two standard errors of the per-image differences).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..features.store import ArraySource  # noqa: F401 - the in-memory source, for callers
from . import ridge
from .training import train_epochs

log = logging.getLogger(__name__)

#: Bytes of float64 pooled features (candidates x images x channels) decomposed at once in the search.
SEARCH_BLOCK_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------- pooling


def pixel_coords(size: int) -> np.ndarray:
    """Normalised coordinates of the pixel centres along an axis of ``size`` pixels: -1 ... 1 (align_corners)."""
    return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)


def grid_coords(positions: int | Sequence[float]) -> np.ndarray:
    """The search's coordinates along each axis: ``positions`` values evenly over [-1, 1], or those given."""
    if isinstance(positions, (int, np.integer)):
        if positions < 1:
            raise ValueError(f"positions must be >= 1, got {positions}")
        return pixel_coords(int(positions))
    coords = np.asarray(positions, dtype=np.float64)
    if coords.ndim != 1 or not coords.size or np.abs(coords).max() > 1:
        raise ValueError("positions must be a grid side or a list of coordinates in [-1, 1]")
    return coords


def axis_weights(size: int, centres: np.ndarray, width: float) -> np.ndarray:
    """Pooling weights (len(centres), size) along one axis of a map, each row summing to 1.

    ``width`` 0: the bilinear interpolation weights at each centre (what ``F.grid_sample`` with
    ``align_corners=True`` reads); otherwise a Gaussian window of that standard deviation (in
    normalised units) over the pixel centres. Both are separable, so a 2-D window is the outer
    product of the row's and the column's weights.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if size == 1:
        return np.ones((len(centres), 1))
    if width == 0:
        u = (centres + 1.0) / 2.0 * (size - 1)
        return np.maximum(0.0, 1.0 - np.abs(u[:, None] - np.arange(size)[None, :]))
    logw = -0.5 * ((pixel_coords(size)[None, :] - centres[:, None]) / width) ** 2
    w = np.exp(logw - logw.max(axis=1, keepdims=True))  # narrow windows between pixels: no underflow to 0/0
    return w / w.sum(axis=1, keepdims=True)


def _pool_row(maps: Sequence[torch.Tensor], wy: Sequence[torch.Tensor], wx: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pooled features (P, n, C) at P positions of one grid row, every level's channels concatenated.

    ``wy[l]``: (H_l,) weights of the row; ``wx[l]``: (P, W_l) weights of the positions' columns.
    """
    out = []
    for m, row, cols in zip(maps, wy, wx):
        r = torch.matmul(row[None, :], m)[:, :, 0]  # (n, C, W): a product over rows, without permuting the maps
        out.append((r @ cols.T).permute(2, 0, 1))
    return torch.cat(out, dim=2)


def _level_weights(shapes, coords, width, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per level: the rows' weights (P, H_l) and the columns' weights (P, W_l) of every grid position."""
    wy = [torch.as_tensor(axis_weights(h, coords, width), dtype=torch.float32, device=device) for _, h, _ in shapes]
    wx = [torch.as_tensor(axis_weights(w, coords, width), dtype=torch.float32, device=device) for _, _, w in shapes]
    return wy, wx


# ----------------------------------------------------------------------------- the search


def _eigh(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched symmetric eigendecomposition; one thread on the CPU, where LAPACK's threads gain nothing on
    matrices this small and stall for tens of milliseconds per matrix when the cores are busy (measured: 4 ms
    with one thread, 47-70 ms with two, for 216 x 216 float64)."""
    if A.device.type != "cpu":
        return torch.linalg.eigh(A)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(A)
    finally:
        torch.set_num_threads(threads)


@dataclass
class SearchResult:
    """Each vertex's best candidate of :func:`grid_search_init` and its ridge fit."""

    mu: np.ndarray  # (V, 2) float32: x (across columns), y (down rows) of the best position, in [-1, 1]
    cell: np.ndarray  # (V, 2) int: its column and row index in the search's grid
    width: np.ndarray  # (V,) int: index of the best pooling width
    weight: np.ndarray  # (C, V) float32: ridge weights on the pooled channels (as given, not standardised)
    scale: np.ndarray  # (C, V) float32: the standard deviations of those pooled channels (weight * scale: ridge's)
    bias: np.ndarray  # (V,) float32
    alpha: np.ndarray  # (V,) float64: the ridge alpha GCV chose
    score: np.ndarray  # (V,) float64: 1 - GCV error / variance, a leave-one-out estimate of R^2
    coords: np.ndarray  # (P,) the grid's coordinates along each axis
    widths: np.ndarray  # (n_widths,) the pooling widths searched


def _as_tensors(maps, device) -> list[torch.Tensor]:
    out = [torch.as_tensor(np.asarray(m, dtype=np.float32), device=device) if not isinstance(m, torch.Tensor)
           else m.to(device=device, dtype=torch.float32) for m in maps]
    if not out or any(m.ndim != 4 for m in out) or len({m.shape[0] for m in out}) != 1:
        raise ValueError("maps must be a non-empty list of (images, channels, height, width) arrays with the same "
                         "number of images")
    return out


def grid_search_init(
    maps: Sequence[np.ndarray | torch.Tensor],
    Y: np.ndarray,
    positions: int | Sequence[float] = 27,
    widths: Sequence[float] = (0.0,),
    alphas: Sequence[float] = ridge.DEFAULT_ALPHAS,
    device: torch.device | str = "cpu",
    block_bytes: int = SEARCH_BLOCK_BYTES,
) -> SearchResult:
    """Each vertex's best position and pooling width on a grid, with its ridge fit.

    Every candidate (a position of the P x P grid, a pooling width) pools every level's maps
    with that window (:func:`axis_weights`; width 0 is the bilinear point the trained model
    reads), standardises the pooled channels, and fits ridge to every vertex with each
    vertex's alpha chosen by generalised cross-validation (:func:`nsdflow.readouts.ridge.gcv_errors`
    on one eigendecomposition per candidate, batched); each vertex keeps the candidate with the
    lowest GCV error: an estimate of its leave-one-out error on all ``n`` images, far less noisy
    than a small held-out split when thousands of candidates compete.

    Parameters
    ----------
    maps : list of (n, C_l, H_l, W_l) float32 arrays or tensors (levels may differ in size)
    Y : (n, V) responses
    positions : grid side P (P values evenly over [-1, 1], on both axes) or the coordinates
    widths : Gaussian window standard deviations, in normalised units (map half-widths)
    alphas : ridge alphas
    device : where to compute (a GPU takes the whole search)
    block_bytes : float64 pooled features decomposed at once (bounds memory with the images held)

    Returns
    -------
    SearchResult

    Cost: per candidate, one min(n, C) x min(n, C) eigendecomposition (float64) and an
    (m x n) x (n x V) product; see the report's measurements (seconds per 729 candidates at the
    demo's size on two cores).
    """
    from .backend import TorchBackend

    dev = torch.device(device)
    xp = TorchBackend(str(dev))
    maps = _as_tensors(maps, dev)
    shapes = [tuple(m.shape[1:]) for m in maps]
    n = maps[0].shape[0]
    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must be (images, vertices) with {n} images like the maps, got shape {Y.shape}")
    if n < 3:
        raise ValueError(f"the search needs at least 3 images, got {n}")
    coords = grid_coords(positions)
    widths = np.asarray(list(widths), dtype=np.float64)
    alphas = np.asarray(list(alphas), dtype=np.float64)
    if not widths.size or (widths < 0).any():
        raise ValueError("widths must be a non-empty list of numbers >= 0")
    p, V, P = sum(s[0] for s in shapes), Y.shape[1], len(coords)
    y_mean = Y.mean(axis=0, dtype=np.float64)
    Yc = torch.as_tensor((Y - y_mean).astype(np.float32), device=dev)
    y_sq = xp.col_sq_sums(Yc)
    gram = p >= n  # the n x n Gram matrix when channels outnumber images, else the p x p covariance
    m = n if gram else p
    per_candidate = 16 * n * p + 16 * m * m + 4 * m * V  # pooled and standardised, matrix and vectors, U'Y
    chunk = max(1, min(P, block_bytes // per_candidate))

    best = torch.full((V,), math.inf, dtype=torch.float64, device=dev)
    cand = torch.zeros((V, 3), dtype=torch.long, device=dev)  # width, row, column
    best_alpha = torch.zeros(V, dtype=torch.float64, device=dev)
    weight = torch.zeros((p, V), dtype=torch.float32, device=dev)
    scales = torch.ones((p, V), dtype=torch.float32, device=dev)
    y_mean_t = torch.as_tensor(y_mean.astype(np.float32), device=dev)
    bias = y_mean_t.clone()
    alphas_t = torch.as_tensor(alphas, device=dev)
    eps = np.finfo(np.float32).eps * max(n, p)
    for wi, width in enumerate(widths):
        wy, wx = _level_weights(shapes, coords, float(width), dev)
        for iy in range(P):
            for x0 in range(0, P, chunk):
                X = _pool_row(maps, [w[iy] for w in wy], [w[x0:x0 + chunk] for w in wx]).double()  # (B, n, p)
                mean = X.mean(dim=1, keepdim=True)
                scale = X.std(dim=1, unbiased=False, keepdim=True)
                scale = torch.where(scale < 1e-8 * mean.abs().clamp(min=1.0), torch.ones_like(scale), scale)
                Z = (X - mean) / scale
                del X
                if gram:
                    w, U = _eigh(Z @ Z.transpose(1, 2))
                else:
                    w, Vm = _eigh(Z.transpose(1, 2) @ Z)
                    Vm = Vm.flip(-1)
                s = w.flip(-1).clamp(min=0).sqrt()
                keep = s > s[:, :1] * eps  # directions carrying information in float32 data (as ridge.decompose)
                U = U.flip(-1) if gram else Z @ Vm / torch.where(keep, s, 1.0)[:, None, :]
                UtY = U.float().transpose(1, 2) @ Yc  # (B, m, V)
                for b in range(Z.shape[0]):
                    idx = torch.nonzero(keep[b]).ravel()
                    sb, Ub = s[b, idx], UtY[b, idx]
                    errors = ridge.gcv_errors(sb, Ub, y_sq, alphas, n, xp)
                    err, ai = errors.min(dim=0)
                    better = torch.nonzero(err < best).ravel()
                    if not better.numel():
                        continue
                    a = alphas_t[ai[better]]
                    coef = Ub[:, better] * (sb[:, None] / (sb[:, None] ** 2 + a[None, :])).float()  # (k, m)
                    if gram:  # V = Z'U / s, applied as Z'(U (coef / s)): cheaper when few vertices improve
                        beta = Z[b].float().T @ (U[b][:, idx].float() @ (coef / sb[:, None].float()))
                    else:
                        beta = Vm[b][:, idx].float() @ coef  # (p, m): on standardised channels
                    sc, mn = scale[b, 0].float(), mean[b, 0].float()
                    weight[:, better] = beta / sc[:, None]
                    scales[:, better] = sc[:, None]
                    bias[better] = y_mean_t[better] - (mn / sc) @ beta
                    best[better], best_alpha[better] = err[better], a
                    cand[better] = torch.tensor([wi, iy, x0 + b], device=dev)
    cand = cand.cpu().numpy()
    var = xp.to_numpy(y_sq) / n
    best_np = best.cpu().numpy()
    score = np.where(var > 0, 1.0 - best_np / np.where(var > 0, var, 1.0), 0.0)
    return SearchResult(
        mu=np.stack([coords[cand[:, 2]], coords[cand[:, 1]]], axis=1).astype(np.float32),
        cell=cand[:, [2, 1]].copy(), width=cand[:, 0].copy(), weight=weight.cpu().numpy(), scale=scales.cpu().numpy(),
        bias=bias.cpu().numpy(), alpha=best_alpha.cpu().numpy(), score=score, coords=coords, widths=widths)


def search_predict(maps: Sequence[np.ndarray | torch.Tensor], result: SearchResult,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Predictions (n, V) float32 of the search's own fits: each vertex's window, pooled, times its weights."""
    dev = torch.device(device)
    maps = _as_tensors(maps, dev)
    shapes = [tuple(m.shape[1:]) for m in maps]
    n, V = maps[0].shape[0], result.weight.shape[1]
    out = torch.empty((n, V), dtype=torch.float32, device=dev)
    weight = torch.as_tensor(result.weight, device=dev)
    bias = torch.as_tensor(result.bias, device=dev)
    for wi in np.unique(result.width):
        wy, wx = _level_weights(shapes, result.coords, float(result.widths[wi]), dev)
        for iy in np.unique(result.cell[result.width == wi, 1]):
            verts = np.flatnonzero((result.width == wi) & (result.cell[:, 1] == iy))
            cols = result.cell[verts, 0]
            X = _pool_row(maps, [w[iy] for w in wy], [w[cols] for w in wx])  # (m, n, p)
            v = torch.as_tensor(verts, device=dev)
            out[:, v] = torch.einsum("mnp,pm->nm", X, weight[:, v]) + bias[v]
    return out.cpu().numpy()


# ----------------------------------------------------------------------------- the model


class GaussianReadout(nn.Module):
    """One position per vertex on every level's feature maps, read bilinearly, and a linear readout.

    Parameters
    ----------
    shapes : per level, (C_l, H_l, W_l)
    n_vertices : V
    hidden : units per level of the shared nonlinear stage (0: none)
    sigma_init : initial jitter, per axis, in normalised units

    Attributes: ``mu`` (V, 2) positions (x, y) in [-1, 1]; ``sigma`` (V, 2) the training jitter;
    ``weight`` (sum C_l, V) and ``bias`` (V,); with ``hidden``, ``hidden_layers`` (one
    ``nn.Linear(C_l, hidden)`` per level, shared by the vertices) and ``hidden_weight`` (L * hidden, V).
    Weights start at ``1 / sum C_l`` as in neuralpredictors, positions at the centre;
    :meth:`load_search` sets them from :func:`grid_search_init` instead.
    """

    def __init__(self, shapes: Sequence[tuple[int, int, int]], n_vertices: int, hidden: int = 0,
                 sigma_init: float = 0.15):
        super().__init__()
        self.shapes = [tuple(int(x) for x in s) for s in shapes]
        if not self.shapes or any(len(s) != 3 or min(s) < 1 for s in self.shapes):
            raise ValueError(f"shapes must be a non-empty list of (channels, height, width), got {shapes}")
        self.channels = [s[0] for s in self.shapes]
        total = sum(self.channels)
        self.mu = nn.Parameter(torch.zeros(n_vertices, 2))
        self.sigma = nn.Parameter(torch.full((n_vertices, 2), float(sigma_init)))
        self.weight = nn.Parameter(torch.full((total, n_vertices), 1.0 / total))
        self.bias = nn.Parameter(torch.zeros(n_vertices))
        self.hidden_layers = nn.ModuleList(nn.Linear(c, hidden) for c in self.channels) if hidden else None
        self.hidden_weight = nn.Parameter(torch.zeros(hidden * len(self.channels), n_vertices)) if hidden else None

    @torch.no_grad()
    def load_search(self, result: SearchResult) -> None:
        """Positions, weights and biases from the search; each jitter at least the vertex's pooling width."""
        self.mu.copy_(torch.as_tensor(result.mu))
        self.sigma.clamp_(min=torch.as_tensor(result.widths[result.width], dtype=torch.float32)[:, None])
        self.weight.copy_(torch.as_tensor(result.weight))
        self.bias.copy_(torch.as_tensor(result.bias))

    def grid(self, batch: int, sample: bool) -> torch.Tensor:
        """Reading positions (batch, V, 1, 2): ``mu``, plus a fresh jitter per image and vertex if ``sample``."""
        g = self.mu.expand(batch, -1, -1)
        if sample:
            g = g + self.sigma * torch.randn(g.shape, device=g.device, dtype=g.dtype)
        return g.clamp(-1.0, 1.0).unsqueeze(2)

    def forward(self, maps: Sequence[torch.Tensor], sample: bool | None = None) -> torch.Tensor:
        """Responses (B, V) to one batch of every level's maps, each (B, C_l, H_l, W_l).

        ``sample`` (default: in training mode) jitters the positions; evaluation reads at ``mu``.
        """
        if len(maps) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} levels of maps, got {len(maps)}")
        if self.training:  # as neuralpredictors: a position that left the map comes back to its edge
            with torch.no_grad():
                self.mu.clamp_(-1.0, 1.0)
        grid = self.grid(maps[0].shape[0], self.training if sample is None else sample)
        feats = [F.grid_sample(m, grid.to(m.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
                 .squeeze(-1) for m in maps]  # (B, C_l, V) each
        # products and sums over channels, level by level: einsum would make V small matrix products (10x
        # slower on the CPU), concatenating the levels would copy them
        y = self.bias + sum((f * w).sum(dim=1) for f, w in zip(feats, self.weight.split(self.channels)))
        if self.hidden_layers is not None:
            h = torch.cat([F.elu(layer(f.transpose(1, 2))) for layer, f in zip(self.hidden_layers, feats)], dim=2)
            y = y + (h * self.hidden_weight.T).sum(dim=2)
        return y


# ----------------------------------------------------------------------------- fit and predict

#: Images read from the sources and predicted at once.
PREDICT_ROWS = 256


def _check_inputs(sources, train_rows, Y, pred_rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not sources:
        raise ValueError("gaussian readout: no feature maps (sources is empty)")
    shapes = [tuple(s.shape) for s in sources]
    if any(len(s) != 4 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(f"gaussian readout: sources must be (images, channels, height, width) maps with the same "
                         f"number of images, got shapes {shapes}")
    n_all = shapes[0][0]
    train_rows = np.asarray(train_rows, dtype=np.int64).ravel()
    pred_rows = np.asarray(pred_rows, dtype=np.int64).ravel()
    for name, rows in (("train_rows", train_rows), ("pred_rows", pred_rows)):
        if rows.size and (rows.min() < 0 or rows.max() >= n_all):
            raise ValueError(f"gaussian readout: {name} must index the sources' {n_all} images")
    if np.unique(train_rows).size != train_rows.size:
        raise ValueError("gaussian readout: train_rows has repeated images")
    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim != 2 or Y.shape[0] != train_rows.size:
        raise ValueError(f"gaussian readout: Y must be (len(train_rows), vertices) = ({train_rows.size}, V), got "
                         f"shape {Y.shape}")
    return train_rows, Y, pred_rows


def _read_training(sources, rows: np.ndarray, device) -> tuple[list[torch.Tensor], list[tuple[np.ndarray, ...]]]:
    """Every level's maps of ``rows`` (in that order), each channel normalised by its mean and standard
    deviation over these rows and pixels; and those statistics."""
    order = np.argsort(rows, kind="stable")
    back = torch.as_tensor(np.argsort(order), device=device)
    in_order = bool((np.diff(rows) > 0).all())
    maps, stats = [], []
    for src in sources:
        block = np.array(src.read(rows[order]), dtype=np.float32)
        mean = block.mean(axis=(0, 2, 3), dtype=np.float64)
        scale = block.std(axis=(0, 2, 3), dtype=np.float64)
        scale[scale < 1e-8 * np.maximum(1.0, np.abs(mean))] = 1.0  # constant channels: centred, not scaled
        mean, scale = mean.astype(np.float32), scale.astype(np.float32)
        block -= mean[None, :, None, None]
        block /= scale[None, :, None, None]
        block = torch.as_tensor(block, device=device)
        maps.append(block if in_order else block[back])  # no copy when the rows come sorted
        stats.append((mean, scale))
    return maps, stats


def _predict_rows(sources, rows: np.ndarray, stats, predict, V: int) -> np.ndarray:
    """``predict(maps) -> (b, V)`` over ``rows`` read :data:`PREDICT_ROWS` at a time (sorted), in ``rows``' order."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), V), dtype=np.float32)
    for i in range(0, len(rows), PREDICT_ROWS):
        chunk = order[i:i + PREDICT_ROWS]
        maps = []
        for src, (mean, scale) in zip(sources, stats):
            block = np.array(src.read(rows[chunk]), dtype=np.float32)
            maps.append((block - mean[None, :, None, None]) / scale[None, :, None, None])
        out[chunk] = predict(maps)
    return out


def _search_info(search: SearchResult, seconds: float) -> dict[str, Any]:
    V = search.mu.shape[0]
    return {"mu": search.mu, "sigma": np.zeros((V, 2), np.float32), "search_mu": search.mu,
            "search_width": search.widths[search.width].astype(np.float32), "search_alpha": search.alpha,
            "search_score": search.score, "search_seconds": round(seconds, 2)}


def _model_predict(model: GaussianReadout, maps: Sequence[torch.Tensor], batch_size: int = PREDICT_ROWS):
    """The model's evaluation-mode responses (n, V) to maps already on its device, in batches."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model([m[i:i + batch_size] for m in maps]) for i in range(0, maps[0].shape[0], batch_size)])


def _clearly_better(losses: np.ndarray, reference: np.ndarray, z: float = 2.0) -> bool:
    """Whether per-image ``losses`` beat ``reference`` (the same images) by more than ``z`` standard
    errors of their paired differences: the best of several epochs, chosen on a few dozen inner
    images, beats the search there by chance alone (on the demo: by under 1 %, then scored 0.6 lower
    on the test images than the search alone)."""
    d = np.asarray(losses, np.float64) - np.asarray(reference, np.float64)
    if d.size < 2:
        return bool(d.mean() < 0)
    return bool(d.mean() < -z * d.std(ddof=1) / np.sqrt(d.size))


def fit_predict(
    sources: Sequence[Any],
    train_rows: np.ndarray,
    Y: np.ndarray,
    pred_rows: np.ndarray,
    params: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    key: str = "",
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the Gaussian readout on ``train_rows`` and predict ``pred_rows``.

    Parameters
    ----------
    sources : one per level, objects with ``shape`` (N, C_l, H_l, W_l) and
        ``read(rows) -> float32 (len(rows), C_l, H_l, W_l)`` for sorted rows (e.g. :class:`ArraySource`)
    train_rows : (n,) the images to fit on (rows of the sources, any order, no repeats)
    Y : (n, V) their responses, in ``train_rows``' order
    pred_rows : (m,) the images to predict (any order)
    params : see :data:`PARAMS` (defaults filled in, values checked)
    device : torch device (CUDA: the search and the training run there)
    checkpoint, key : the resumable training state and what it belongs to (see
        :func:`nsdflow.readouts.training.train_epochs`); on resuming, the search is computed again
        (it is deterministic) and the training continues from the checkpoint

    Returns
    -------
    predictions : (m, V) float32, in the responses' units
    info : ``mu`` (V, 2) and ``sigma`` (V, 2) of the returned model (x, y; sigma 0 with
        ``init_only``), ``search_mu`` (V, 2), ``search_width`` (V,) (normalised units),
        ``search_alpha`` (V,), ``search_score`` (V,) (the search's leave-one-out R^2 estimate);
        without ``init_only`` also ``kept`` ("trained", or "search" when the best epoch did not
        beat the search's model on the inner split by two standard errors of the per-image differences), ``inner_loss_search`` and ``training`` (the
        :class:`~nsdflow.readouts.training.TrainResult` as a dict)

    The training rows of every level are read once and held on ``device`` (the search needs all
    of them): n x sum_l C_l H_l W_l float32. Channels are normalised with their mean and standard
    deviation over the training rows and pixels; responses are z-scored per vertex on the
    training rows and predictions mapped back. A fraction ``inner_val_fraction`` of the training
    rows is held out; the search and the training see the others, and the inner rows choose the
    epoch, or the search unless the best epoch beats the search's own model there by more than two
    standard errors of the per-image differences: then the search runs again on every training
    row and its predictions are exactly ``init_only``'s.
    """
    from . import gaussian

    params = gaussian.GaussianReadout().normalize(dict(params or {}))
    dev = torch.device(device)
    train_rows, Y, pred_rows = _check_inputs(sources, train_rows, Y, pred_rows)
    n, V = Y.shape
    if n < 3:
        raise ValueError(f"gaussian readout: needs at least 3 training images, got {n}")
    maps, stats = _read_training(sources, train_rows, dev)
    y_mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
    y_scale = Y.std(axis=0, dtype=np.float64).astype(np.float32)
    y_scale[y_scale == 0] = 1.0
    Z = torch.as_tensor((Y - y_mean) / y_scale, device=dev)
    t0 = time.time()
    if params["init_only"]:  # no epochs to choose: the search sees every training image
        search = grid_search_init(maps, Z.cpu().numpy(), params["positions"], params["widths"], params["alphas"], dev)
        pred = _predict_rows(sources, pred_rows, stats, lambda m: search_predict(m, search, dev), V)
        return pred * y_scale + y_mean, _search_info(search, time.time() - t0)
    n_inner = max(1, round(params["inner_val_fraction"] * n))
    if n - n_inner < 3:
        raise ValueError(f"gaussian readout: {n} training images leave fewer than 3 to fit after the inner split "
                         f"(inner_val_fraction {params['inner_val_fraction']})")
    perm = np.random.default_rng([int(params["seed"]), n]).permutation(n)
    inner = torch.as_tensor(np.sort(perm[:n_inner]), device=dev)
    fit = torch.as_tensor(np.sort(perm[n_inner:]), device=dev)
    fit_maps, inner_maps = [m[fit] for m in maps], [m[inner] for m in maps]
    del maps
    Z_fit, Z_inner = Z[fit], Z[inner]
    search = grid_search_init(fit_maps, Z_fit.cpu().numpy(), params["positions"], params["widths"],
                              params["alphas"], dev)
    info = _search_info(search, time.time() - t0)

    torch.manual_seed(int(params["seed"]))
    model = GaussianReadout([tuple(m.shape[1:]) for m in fit_maps], V, params["hidden"], params["sigma_init"]).to(dev)
    model.load_search(search)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
    # Each vertex keeps the ridge penalty its search chose, alpha ||w * s||^2 / n (s: the channels' scales at its
    # position): with sigma 0 the search's fit is the minimum of the training loss that training starts from.
    ridge_weight = torch.as_tensor(search.alpha / len(fit), dtype=torch.float32, device=dev)
    scale = torch.as_tensor(search.scale, device=dev)
    l1 = float(params["l1"])

    def penalty():
        out = (((model.weight * scale) ** 2).sum(0) * ridge_weight).sum() / V
        if model.hidden_weight is not None:
            out = out + ((model.hidden_weight ** 2).sum(0) * ridge_weight).sum() / V
        return out + l1 * model.weight.abs().sum() / V if l1 else out

    def batches(epoch, generator):
        order = torch.randperm(len(fit), generator=generator).to(dev)
        for i in range(0, len(order), params["batch_size"]):
            yield order[i:i + params["batch_size"]]

    def step(idx):
        return ((model([m[idx] for m in fit_maps]) - Z_fit[idx]) ** 2).mean() + penalty()

    def inner_losses():  # per inner image, the mean over vertices
        return ((_model_predict(model, inner_maps) - Z_inner) ** 2).mean(dim=1).double().cpu().numpy()

    def inner_loss():
        return float(inner_losses().mean())

    search_losses = inner_losses()
    loss_search = float(search_losses.mean())
    result = train_epochs(model, optimizer, step, batches, epochs=params["epochs"], seed=int(params["seed"]),
                          inner_loss=inner_loss, patience=params["patience"], device=dev, checkpoint=checkpoint,
                          key=key, progress=progress, desc="gaussian readout")
    kept = "trained" if _clearly_better(inner_losses(), search_losses) else "search"
    if kept == "search":
        # No epoch beat the search clearly on the inner rows: the search again on every training image,
        # i.e. the init_only model (the inner rows were held out only to make that choice).
        del model, optimizer
        t1 = time.time()
        search = grid_search_init([torch.cat([f, i]) for f, i in zip(fit_maps, inner_maps)],
                                  torch.cat([Z_fit, Z_inner]).cpu().numpy(), params["positions"], params["widths"],
                                  params["alphas"], dev)
        pred = _predict_rows(sources, pred_rows, stats, lambda m: search_predict(m, search, dev), V)
        info = _search_info(search, info["search_seconds"] + time.time() - t1)
    else:
        pred = _predict_rows(sources, pred_rows, stats,
                             lambda m: _model_predict(model, [torch.as_tensor(x, device=dev) for x in m]).cpu().numpy(),
                             V)
        info.update(mu=model.mu.detach().clamp(-1, 1).cpu().numpy(), sigma=model.sigma.detach().abs().cpu().numpy())
    info.update(kept=kept, inner_loss_search=loss_search, training=result.as_dict())
    log.info("gaussian readout: %d vertices, search %.1f s, %d epochs (best %d), inner loss %.4f (search's %.4f): "
             "kept the %s model", V, info["search_seconds"], result.epochs, result.best_epoch, result.inner_loss,
             loss_search, kept)
    return pred * y_scale + y_mean, info
