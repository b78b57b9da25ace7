"""The ``transformer`` readout: a DETR-style decoder from a grid of patch features to vertices.

After Adeli, Minni & Kriegeskorte (2023), "Predicting brain activity using Transformers"
(Algonauts 2023, second place): frozen backbone features of one layer, as an ``H x W`` grid of
``C``-channel patch tokens, are read by a transformer decoder whose learned queries stand for
brain regions. A query gathers what its region needs from the grid by cross-attention; each
vertex ``v`` is then read out from the output of the query that owns it::

    y_v = <h_owner(v), W_v> + b_v        (one weight row W_v and bias b_v per vertex)

Queries (:func:`query_assignment`): per hemisphere one query per ROI of a chosen ROI class plus
one ``other`` query for its vertices in no ROI of that class (``streams``: 7 + 1 per hemisphere),
or one query per vertex (``vertex``: cross-attention only, no self-attention).

The decoder follows DETR's post-norm ``TransformerDecoderLayer``: the decoder state starts at zero
and the query embeddings enter as positional terms (added to the attention queries), the grid's
2-D sine positions are added to the attention keys, a final LayerNorm follows the last layer, and
the decoder's matrices are Xavier-initialised. Note that in the first layer the state is zero, so
self-attention there adds the same learned vector to every query: with one layer (the published
setup) queries do not interact and self-attention is a constant.

Training (:func:`fit_predict`) goes through :func:`nsdflow.readouts.training.train_epochs`: MSE on
z-scored responses, AdamW, gradient clipping, the best epoch on an inner split of the fit images,
bf16 autocast on CUDA, and checkpoints a killed job resumes from. Features are read from a
``source`` (anything with ``.shape`` (N, C, H, W) and ``.read(sorted rows)``, e.g. a Zarr array
behind a thin wrapper, or :class:`ArraySource`) in blocks of ``block`` consecutive rows, so a
chunked store is read about once per epoch and memory stays bounded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.layout import ROI_CLASSES, UNKNOWN
from ..features.store import ArraySource
from .training import autocast, train_epochs

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

from .transformer import VERTEX  # noqa: E402 - one spelling of the vertex queries

OTHER = "other"
HEMIS = ("lh", "rh")

#: Rows (in float32 bytes) up to which the images a fit needs are read once and kept in memory;
#: above it they are streamed from the source every epoch.
CACHE_BYTES = 2 * 2**30


def check_params(params: dict[str, Any]) -> None:
    """Checks across parameters (each value alone is checked by the readout's declaration); ValueError."""
    if params["d_model"] % params["heads"]:
        raise ValueError(f"heads: must divide d_model (got heads {params['heads']}, d_model {params['d_model']})")
    if params["d_model"] % 4:
        raise ValueError(f"d_model: must be a multiple of 4 for the 2-D sine positions (got {params['d_model']})")


# ----------------------------------------------------------------------------- positions and queries


def sine_position_embedding(height: int, width: int, d_model: int, temperature: float = 10000.0,
                            normalize: bool = True) -> torch.Tensor:
    """DETR's ``PositionEmbeddingSine`` for an unpadded ``height x width`` grid.

    Row ``i`` and column ``j`` (1-based, or scaled to ``(0, 2 pi]`` when ``normalize``) each fill
    ``d_model / 2`` channels: channel ``k`` holds ``sin`` (k even) or ``cos`` (k odd) of
    ``pos / temperature ** (2 * (k // 2) / (d_model / 2))``; the row's channels come first.

    Returns
    -------
    torch.Tensor
        (height * width, d_model) float32, tokens in row-major order (as ``flatten`` of (H, W)).
    """
    if d_model % 4:
        raise ValueError(f"d_model: must be a multiple of 4 for 2-D sine positions (got {d_model})")
    half = d_model // 2
    y = torch.arange(1, height + 1, dtype=torch.float32)
    x = torch.arange(1, width + 1, dtype=torch.float32)
    if normalize:
        eps = 1e-6  # DETR's: positions end just below 2 pi
        y = y / (height + eps) * (2 * math.pi)
        x = x / (width + eps) * (2 * math.pi)
    k = torch.arange(half, dtype=torch.float32)
    freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / half)

    def encode(p):
        a = p[:, None] / freq
        return torch.where(k.to(torch.long) % 2 == 0, a.sin(), a.cos())

    ey, ex = encode(y), encode(x)  # (H, half), (W, half)
    return torch.cat([ey[:, None, :].expand(height, width, half),
                      ex[None, :, :].expand(height, width, half)], dim=-1).reshape(height * width, d_model)


def query_assignment(tables: dict[str, pd.DataFrame], queries: str) -> tuple[np.ndarray, list[str]]:
    """Which decoder query reads out each vertex.

    Parameters
    ----------
    tables : dict
        Hemisphere (``lh``, ``rh``; one or both) to its region table (one row per vertex, in
        vertex order; a column per ROI class holding ROI names or ``Unknown``). Vertices are
        numbered ``lh`` first, then ``rh``.
    queries : str
        An ROI class: per hemisphere, one query per ROI of the class that has vertices there
        (in the class's canonical order), then one ``other`` query for its ``Unknown``
        vertices (all of them if the table lacks the class). Queries are never shared across
        hemispheres. ``vertex``: one query per vertex.

    Returns
    -------
    owner : np.ndarray
        (V,) int64, the query of each vertex.
    names : list of str
        Query names, ``'lh:V1d'``, ``'rh:other'``, or ``'lh:17'`` (vertex queries).
    """
    unknown = sorted(set(tables) - set(HEMIS))
    if unknown or not tables:
        raise ValueError(f"tables: keys must be hemispheres {', '.join(HEMIS)} (got {sorted(tables)})")
    if queries != VERTEX and queries not in ROI_CLASSES:
        raise ValueError(f"queries: must be one of {', '.join([*ROI_CLASSES, VERTEX])} (got {queries!r})")
    owners, names = [], []
    for hemi in (h for h in HEMIS if h in tables):
        n = len(tables[hemi])
        if queries == VERTEX:
            owners.append(len(names) + np.arange(n))
            names += [f"{hemi}:{i}" for i in range(n)]
            continue
        labels = (tables[hemi][queries].to_numpy(dtype=object) if queries in tables[hemi].columns
                  else np.full(n, UNKNOWN, dtype=object))
        present = set(labels[labels != UNKNOWN])
        strays = sorted(present - set(ROI_CLASSES[queries]))
        if strays:
            raise ValueError(f"{hemi} region table: {queries} has ROIs {strays} not in the class "
                             f"({', '.join(ROI_CLASSES[queries])})")
        groups = [r for r in ROI_CLASSES[queries] if r in present] + ([UNKNOWN] if (labels == UNKNOWN).any() else [])
        owner = np.empty(n, dtype=np.int64)
        for g in groups:
            owner[labels == g] = len(names)
            names.append(f"{hemi}:{OTHER if g == UNKNOWN else g}")
        owners.append(owner)
    return np.concatenate(owners).astype(np.int64), names


# ----------------------------------------------------------------------------- the model


class DecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: [self-attention,] cross-attention to the grid, feed-forward."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float, self_attention: bool):
        super().__init__()
        if self_attention:
            self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
            self.norm1 = nn.LayerNorm(d_model)
            self.dropout1 = nn.Dropout(dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.linear1 = nn.Linear(d_model, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, memory, memory_key, need_weights=False):
        """``tgt`` (B, Q, d) or None for the zero state; ``query_pos`` (Q, d); ``memory`` (B, HW, d),
        ``memory_key`` = memory + positions. Returns (tgt, head-averaged cross-attention or None)."""
        batch = memory.shape[0]
        qpos = query_pos.unsqueeze(0).expand(batch, -1, -1)
        if hasattr(self, "self_attn"):
            if tgt is None:
                tgt = memory.new_zeros(qpos.shape)
            q = tgt + qpos
            tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        # The zero state stays implicit when it is one: a (B, Q, d) tensor of zeros is 1.9 GB at
        # 20,000 vertex queries.
        q = qpos if tgt is None else tgt + qpos
        out, weights = self.cross_attn(q, memory_key, memory, need_weights=need_weights, average_attn_weights=True)
        out = self.dropout2(out)
        tgt = self.norm2(out if tgt is None else tgt + out)
        tgt = self.norm3(tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))
        return tgt, weights


class BrainDecoder(nn.Module):
    """Grid of patch features -> decoder queries -> one linear readout per vertex.

    Parameters
    ----------
    owner : array of int, (V,)
        The query of each vertex (:func:`query_assignment`). ``owner == arange(V)`` are vertex
        queries: one query per vertex, no self-attention, an einsum readout.
    in_channels, height, width : int
        The input grid (C, H, W).
    n_queries : int, optional
        Number of queries (default ``owner.max() + 1``).
    self_attention : bool, optional
        Self-attention among the queries; default on for ROI queries, off (and impossible) for
        vertex queries.

    The readout never forms a (B, V, d) gather of query outputs nor a V x V product: ROI
    queries loop over queries, ``(B, d) @ (d, V_q)``; vertex queries take one dot product per
    vertex (``einsum('bvd,vd->bv')``).
    """

    def __init__(self, owner, in_channels: int, height: int, width: int, *, d_model: int = 768, heads: int = 16,
                 ffn: int = 2048, layers: int = 1, dropout: float = 0.1, self_attention: bool | None = None,
                 n_queries: int | None = None):
        super().__init__()
        owner = np.asarray(owner, dtype=np.int64)
        n_vertices = len(owner)
        if n_vertices == 0:
            raise ValueError("owner: no vertices to read out")
        n_queries = int(owner.max()) + 1 if n_queries is None else int(n_queries)
        if owner.min() < 0 or owner.max() >= n_queries:
            raise ValueError(f"owner: must map each of the {n_vertices} vertices to a query in [0, {n_queries})")
        check_params({"d_model": d_model, "heads": heads})
        self.per_vertex = n_queries == n_vertices and bool(np.array_equal(owner, np.arange(n_vertices)))
        if self_attention is None:
            self_attention = not self.per_vertex
        if self_attention and self.per_vertex:
            raise ValueError(f"self_attention: not with vertex queries ({n_vertices} queries attending to each other)")
        self.grid = (int(height), int(width))
        self.input_proj = nn.Identity() if in_channels == d_model else nn.Linear(in_channels, d_model)
        self.register_buffer("pos", sine_position_embedding(height, width, d_model), persistent=False)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ffn, dropout, self_attention) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        for p in self.layers.parameters():  # DETR's Transformer._reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.query_embed = nn.Embedding(n_queries, d_model)  # N(0, 1), as DETR's
        bound = 1 / math.sqrt(d_model)  # nn.Linear's default, as the published per-hemisphere readout
        self.weight = nn.Parameter(torch.empty(n_vertices, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_vertices).uniform_(-bound, bound))
        if not self.per_vertex:
            order = np.argsort(owner, kind="stable")
            self.register_buffer("order", torch.as_tensor(order), persistent=False)
            self.register_buffer("inverse", torch.as_tensor(np.argsort(order, kind="stable")), persistent=False)
            self.bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_queries))]).tolist()

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """``x`` (B, C, H, W) -> predictions (B, V); with ``return_attention`` also the last layer's
        cross-attention weights averaged over heads, (B, Q, H*W) (in eval mode they sum to 1 over
        the grid; in training mode attention dropout has been applied to them)."""
        if tuple(x.shape[-2:]) != self.grid:
            raise ValueError(f"input grid {tuple(x.shape[-2:])} is not the model's {self.grid}")
        memory = self.input_proj(x.flatten(2).transpose(1, 2))  # (B, HW, d), tokens row-major
        memory_key = memory + self.pos
        tgt, weights = None, None
        for i, layer in enumerate(self.layers):
            tgt, weights = layer(tgt, self.query_embed.weight, memory, memory_key,
                                 need_weights=return_attention and i == len(self.layers) - 1)
        h = self.norm(tgt)  # (B, Q, d)
        if self.per_vertex:
            pred = torch.einsum("bvd,vd->bv", h, self.weight)
        else:
            parts = [h[:, q] @ self.weight[self.order[s:e]].T
                     for q, (s, e) in enumerate(zip(self.bounds[:-1], self.bounds[1:])) if e > s]
            pred = torch.cat(parts, dim=1)[:, self.inverse]
        pred = pred + self.bias
        return (pred, weights) if return_attention else pred


# ----------------------------------------------------------------------------- reading features


class _MemoryCopy(ArraySource):
    """The rows of ``source`` that a fit needs, read once block by block (the cache of the rule)."""

    def __init__(self, source, rows: np.ndarray, block: int):
        self.rows = np.unique(rows)
        self.shape = source.shape
        self.array = np.empty((len(self.rows), *source.shape[1:]), np.float32)
        for group in _groups(self.rows, np.arange(len(self.rows)), block):
            self.array[group] = source.read(self.rows[group])

    def read(self, rows):
        return self.array[np.searchsorted(self.rows, rows)]


def _groups(rows: np.ndarray, positions: np.ndarray, block: int, generator: torch.Generator | None = None):
    """``positions`` (into ``rows``) grouped by source block ``rows // block``: blocks and positions
    in ascending row order, or both shuffled with ``generator``."""
    positions = positions[np.argsort(rows[positions], kind="stable")]
    _, starts = np.unique(rows[positions] // block, return_index=True)
    groups = np.split(positions, starts[1:])
    if generator is None:
        return groups
    groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    return [g[torch.randperm(len(g), generator=generator).numpy()] for g in groups]


class _Blocks(torch.utils.data.Dataset):
    """Item ``i``: the features of ``rows[groups[i]]`` in group order (each distinct row read once,
    in ascending order)."""

    def __init__(self, source, rows: np.ndarray, groups: list[np.ndarray]):
        self.source, self.rows, self.groups = source, rows, groups

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i):
        distinct, where = np.unique(self.rows[self.groups[i]], return_inverse=True)
        return torch.from_numpy(np.ascontiguousarray(self.source.read(distinct)[where], dtype=np.float32))


def _loader(dataset, num_workers: int, pin: bool) -> torch.utils.data.DataLoader:
    # Its own generator: a DataLoader draws a seed when iterated, which would otherwise come from
    # the global generator that dropout uses.
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                       pin_memory=pin, generator=torch.Generator().manual_seed(0))


def _stream(source, rows, groups, batch_size: int, num_workers: int, pin: bool) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Minibatches ``(features, positions)`` of ``batch_size`` (the last may be smaller) taken in
    the order of ``groups``, read one group at a time through a DataLoader."""
    loader = _loader(_Blocks(source, rows, groups), num_workers, pin)
    carry_x, carry_p = None, np.zeros(0, np.int64)
    for group, x in zip(groups, loader):
        if len(carry_p):
            x, group = torch.cat([carry_x, x]), np.concatenate([carry_p, group])
        full = len(group) // batch_size * batch_size
        for i in range(0, full, batch_size):
            yield x[i:i + batch_size], group[i:i + batch_size]
        carry_x, carry_p = x[full:], group[full:]
    if len(carry_p):
        yield carry_x, carry_p


def channel_stats(source, rows: np.ndarray, block: int, num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each input channel over ``rows`` and all grid positions
    (float64 sums, one pass in blocks); a constant channel gets standard deviation 1."""
    c = source.shape[1]
    total, squares, count = np.zeros(c), np.zeros(c), 0
    loader = _loader(_Blocks(source, rows, _groups(rows, np.arange(len(rows)), block)), num_workers, False)
    for x in loader:
        for i in range(0, len(x), 8):  # float64 copies of 8 images at a time, not of a block
            part = x[i:i + 8].to(torch.float64)
            total += part.sum(dim=(0, 2, 3)).numpy()
            squares += (part * part).sum(dim=(0, 2, 3)).numpy()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean**2, 0))
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


# ----------------------------------------------------------------------------- training


def fit_predict(source, train_rows, Y, pred_rows, owner, params: dict[str, Any], device: str | torch.device = "cpu",
                checkpoint=None, key: str = "", progress: bool = False, cache_bytes: int = CACHE_BYTES,
                return_model: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Train a :class:`BrainDecoder` on the images ``train_rows`` and predict ``pred_rows``.

    Parameters
    ----------
    source
        Features: ``.shape`` (N, C, H, W) and ``.read(rows) -> float32 (len(rows), C, H, W)`` for
        ascending ``rows`` (e.g. :class:`ArraySource`, or a Zarr array wrapped alike).
    train_rows : array of int
        Rows of ``source`` to fit on (distinct, any order).
    Y : np.ndarray
        (len(train_rows), V) float32 responses, in ``train_rows``' order.
    pred_rows : array of int
        Rows of ``source`` to predict (any order, may repeat).
    owner : array of int
        (V,) the query of each vertex (:func:`query_assignment`).
    params : dict
        Every parameter of :class:`~nsdflow.readouts.transformer.TransformerReadout`, defaults
        filled in (``queries`` only decides ``owner``, made by the caller).
    checkpoint, key
        Where :func:`train_epochs` keeps its resumable state, and what it must be written for.
    cache_bytes : int
        The memory rule: when the distinct rows of ``train_rows`` and ``pred_rows`` take at most
        this many float32 bytes they are read once and kept in memory; otherwise they are read
        from ``source`` block by block every epoch (peak: a block or two of features plus the
        DataLoader's prefetch). Predictions do not depend on it.
    return_model : bool
        Also return the trained model (eval mode) and the input statistics in ``info`` (for
        attention maps: ``model((x - mean[:, None, None]) / std[:, None, None], True)``).

    Returns
    -------
    pred : np.ndarray
        (len(pred_rows), V) float32, in the units of ``Y``.
    info : dict
        :class:`~nsdflow.readouts.training.TrainResult` fields (``epochs``, ``best_epoch``,
        ``train_loss``, ``inner_loss``, ``resumed_from``, ``seconds``), ``history``, ``n_queries``
        and ``cached`` (whether the memory rule kept the features in memory).

    Targets are z-scored per vertex on all of ``train_rows`` and predictions mapped back; input
    channels are standardised with their mean and standard deviation over ``train_rows`` and all
    grid positions (:func:`channel_stats`). An inner split (``inner_val_fraction`` of
    ``train_rows``, drawn with ``seed``) picks the best epoch and is not trained on.
    """
    check_params(params)
    device = torch.device(device)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    pred_rows = np.asarray(pred_rows, dtype=np.int64)
    owner = np.asarray(owner, dtype=np.int64)
    Y = np.asarray(Y, dtype=np.float32)
    n, (c, height, width) = len(train_rows), source.shape[1:]
    if Y.shape != (n, len(owner)):
        raise ValueError(f"Y: must be (len(train_rows), len(owner)) = ({n}, {len(owner)}) (got {Y.shape})")
    if len(np.unique(train_rows)) != n:
        raise ValueError("train_rows: must be distinct rows of the feature source")
    for name, rows in (("train_rows", train_rows), ("pred_rows", pred_rows)):
        if len(rows) and (rows.min() < 0 or rows.max() >= source.shape[0]):
            raise ValueError(f"{name}: rows must be in [0, {source.shape[0]}) (the feature source's rows)")
    n_inner = max(1, round(params["inner_val_fraction"] * n))
    if n - n_inner < 1:
        raise ValueError(f"transformer: {n} fit images leave none to train on after the inner validation split "
                         f"(inner_val_fraction {params['inner_val_fraction']})")
    block, batch_size = params["block"], params["batch_size"]

    needed = np.union1d(train_rows, pred_rows)
    cached = len(needed) * c * height * width * 4 <= cache_bytes
    if cached:
        source = _MemoryCopy(source, needed, block)
    workers = 0 if cached else params["num_workers"]
    pin = device.type == "cuda"

    mean_y = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
    scale_y = Y.std(axis=0, dtype=np.float64).astype(np.float32)
    scale_y[scale_y == 0] = 1.0
    Yt = torch.as_tensor((Y - mean_y) / scale_y, device=device)
    mean_x, std_x = channel_stats(source, train_rows, block, workers)
    mean_t = torch.as_tensor(mean_x, device=device)[:, None, None]
    std_t = torch.as_tensor(std_x, device=device)[:, None, None]

    rng = np.random.default_rng([int(params["seed"]), n])
    perm = rng.permutation(n)
    inner, fit = np.sort(perm[:n_inner]), np.sort(perm[n_inner:])

    torch.manual_seed(int(params["seed"]))
    model = BrainDecoder(owner, c, height, width, d_model=params["d_model"], heads=params["heads"],
                         ffn=params["ffn"], layers=params["layers"], dropout=params["dropout"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])

    def prepare(x):
        return (x.to(device, non_blocking=True) - mean_t) / std_t

    def batches(epoch, generator):
        groups = _groups(train_rows, fit, block, generator)
        for x, positions in _stream(source, train_rows, groups, batch_size, workers, pin):
            yield prepare(x), Yt[torch.as_tensor(positions, device=device)]

    def step(batch):
        x, y = batch
        return F.mse_loss(model(x).float(), y)

    def inner_loss():
        total = 0.0
        for x, positions in _stream(source, train_rows, _groups(train_rows, inner, block), batch_size, workers, pin):
            y = Yt[torch.as_tensor(positions, device=device)]
            total += float(((model(prepare(x)).float() - y) ** 2).sum())
        return total / (len(inner) * Yt.shape[1])

    result = train_epochs(model, optimizer, step, batches, epochs=params["epochs"], seed=params["seed"],
                          inner_loss=inner_loss, clip=params["clip"] or None, device=device, checkpoint=checkpoint,
                          key=key, progress=progress, desc="transformer")

    pred = np.zeros((len(pred_rows), len(owner)), np.float32)
    if len(pred_rows):
        with torch.no_grad(), autocast(device):
            for x, positions in _stream(source, pred_rows, _groups(pred_rows, np.arange(len(pred_rows)), block),
                                        batch_size, workers, pin):
                pred[positions] = model(prepare(x)).float().cpu().numpy()
    pred = pred * scale_y + mean_y
    info = {**result.as_dict(), "history": result.history, "n_queries": model.query_embed.num_embeddings,
            "cached": cached}
    if return_model:
        info.update(model=model, input_mean=mean_x, input_std=std_x)
    log.info("transformer: %d vertices, %d queries, %d epochs (best %d), inner loss %.4f, %.0f s", len(owner),
             info["n_queries"], result.epochs, result.best_epoch, result.inner_loss, result.seconds)
    return pred.astype(np.float32), info


def decoder_attention(info: dict[str, Any], source, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Where each query looks: the trained model's last cross-attention (averaged over heads) on the
    images ``rows`` of ``source``, as ``{"maps": (n, Q, H, W), "images": rows}`` (eval mode: each
    map sums to 1). ``info``: :func:`fit_predict`'s, with ``return_model``."""
    model = info["model"]
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows)
    x = torch.as_tensor(source.read(rows[order]))[np.argsort(order)]
    x = (x - torch.as_tensor(info["input_mean"])[:, None, None]) / torch.as_tensor(info["input_std"])[:, None, None]
    device = next(model.parameters()).device
    with torch.no_grad():
        _, weights = model(x.to(device), return_attention=True)
    height, width = model.grid
    return {"maps": weights.float().cpu().numpy().reshape(len(rows), -1, height, width).astype(np.float32),
            "images": rows}
