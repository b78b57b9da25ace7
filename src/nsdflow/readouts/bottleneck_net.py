"""The bottleneck network (FBNET; Ndubuaku 2023, "Modelling the brain's response to natural scenes
in the bottleneck space", code github.com/HMUNACHI/FBNET): a network from image features reduced
by PCA to the fMRI responses of both hemispheres reduced by PCA, decoded back to vertices.

::

    x (n, d_in) -> Linear(d_in, hidden) -> h + PReLU(Linear(hidden, hidden)(h)) -> dropout
                -> leak injection -> Linear(hidden, k) (left), Linear(hidden, k) (right)
                -> each hemisphere's target PCA inverse -> vertices

The three ideas of the paper, each a switch:

``leak``
    In training, the hidden layer receives the targets' own PCA components (both hemispheres,
    ``2k`` numbers) through a learned projection, with structured noise:
    ``(h + a P(leak) + b P(z)) / (1 + a + b)``; at inference the targets are absent and the noise
    is removed: ``(h - (a + b) P(z)) / (1 + a + b)`` (:func:`leak_input`). ``P`` is one
    ``Linear(2k, hidden)`` (with bias) shared by leak and noise; ``z ~ N(0, diag(var))``, the
    variances of the targets' PCA components.
``racing``
    The loss ``-(min(cos_L, cos_R) + (cos_L + cos_R) / 2)``, ``cos`` the cosine between predicted
    and true component vectors of each image, averaged over the batch (:func:`racing_loss`);
    else MSE on the components (the paper's "F-BNet (MSE)").
``pretrain``
    One network (trunk, heads and leak projection alike) trained on the pooled images of all
    subjects, each image's targets in its own subject's PCA (:func:`pretrain`), then fine-tuned
    on each subject (:func:`fit` with ``init``).

Training uses :class:`Lion` (their ``optax.lion``) and keeps the epoch of best mean vertex
correlation on an inner split of the fit images, all through
:func:`nsdflow.readouts.training.train_epochs` (checkpointed; a killed job resumes).

The inputs (the image features reduced to ``d_in`` dimensions, shared across subjects) come from
the caller; the targets' PCA is fitted here, on the fit rows only.

Where this departs from their code (``src/model.py``, ``src/trainer.py``, ``src/dataloader.py``,
``experimentation.ipynb``): dropout is ordinary dropout in training only (theirs draws its mask
from a fixed key, ``PRNGKey(42)``, so the same mask every call, in training and at inference);
the inner split is a seeded random 5% (theirs: the first 5% of the rows); the noise is seeded
(theirs: ``np.random`` unseeded, fresh at every evaluation); the pretraining recipe is not in
their code (only its checkpoint ``all``, loaded whole), so pooling the subjects, each in its own
PCA, is this module's reading of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .training import TrainResult, train_epochs

log = logging.getLogger(__name__)


def _resolved(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` with the readout's defaults filled in and every value checked."""
    from .bottleneck import BottleneckReadout

    return BottleneckReadout().normalize(dict(params or {}))


# ----------------------------------------------------------------------------- pieces


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023) as ``optax.lion``: ``p -= lr (sign(b1 m + (1 - b1) g) + wd p)``,
    then ``m = b2 m + (1 - b2) g``; the decay is decoupled and applies to every parameter."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 1e-3):
        if lr <= 0:
            raise ValueError(f"lr: must be > 0 (got {lr})")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                # in place: a step touches 40 M weights at the published size
                direction = torch.lerp(p.grad, m, b1).sign_()  # sign(b1 m + (1 - b1) g)
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(direction, alpha=-group["lr"])
                m.lerp_(p.grad, 1 - b2)  # b2 m + (1 - b2) g
        return loss


def _cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine of each row pair, shape (n,); a zero row gives 0 rather than NaN."""
    pred, target = pred.float(), target.float()
    norms = pred.norm(dim=-1) * target.norm(dim=-1)
    return (pred * target).sum(-1) / norms.clamp_min(1e-30)


def racing_loss(pred_lh: torch.Tensor, y_lh: torch.Tensor, pred_rh: torch.Tensor, y_rh: torch.Tensor) -> torch.Tensor:
    """``-(min(cos_L, cos_R) + (cos_L + cos_R) / 2)``: the lagging hemisphere counts twice.

    ``cos_H`` is the cosine between the predicted and the true component vectors (n, k) of each
    image, averaged over the images. In [-2, 2]; -2 when every prediction points at its target.
    """
    cos_l, cos_r = _cosine(pred_lh, y_lh).mean(), _cosine(pred_rh, y_rh).mean()
    return -(torch.minimum(cos_l, cos_r) + (cos_l + cos_r) / 2)


def mse_loss(pred_lh: torch.Tensor, y_lh: torch.Tensor, pred_rh: torch.Tensor, y_rh: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the images and components of both hemispheres."""
    return (((pred_lh.float() - y_lh) ** 2).mean() + ((pred_rh.float() - y_rh) ** 2).mean()) / 2


def leak_input(h: torch.Tensor, p_noise: torch.Tensor, p_leak: torch.Tensor | None, a: float, b: float) -> torch.Tensor:
    """The leak injection on the hidden layer ``h`` (n, hidden).

    ``p_noise``, ``p_leak``: the structured noise and the targets' components, each through the
    leak projection (n, hidden). Training (``p_leak`` given): ``(h + a p_leak + b p_noise) / (1 + a + b)``;
    inference (``p_leak`` None): ``(h - (a + b) p_noise) / (1 + a + b)``.
    """
    if p_leak is None:
        return (h - (a + b) * p_noise) / (1 + a + b)
    return (h + a * p_leak + b * p_noise) / (1 + a + b)


def _lecun_normal_(weight: torch.Tensor, generator: torch.Generator) -> None:
    # flax's Dense default (variance_scaling(1, fan_in, truncated_normal)): variance 1/fan_in
    # after truncation at two standard deviations.
    std = math.sqrt(1.0 / weight.shape[1]) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std, generator=generator)


class BottleneckNet(nn.Module):
    """The network on (n, d_in) inputs; returns the components (n, k) of each hemisphere.

    ``forward(x, noise, leak)``: ``noise`` (n, 2k) the structured noise (needed when ``leak`` is on),
    ``leak`` (n, 2k) the targets' components (left then right), in training only.
    """

    def __init__(self, d_in: int, hidden: int, n_components: int, dropout: float, leak: bool,
                 leak_a: float, leak_b: float, seed: int = 0):
        super().__init__()
        self.widen = nn.Linear(d_in, hidden)
        self.residual = nn.Linear(hidden, hidden)
        self.prelu = nn.PReLU(1, init=0.01)  # flax's PReLU: one slope, 0.01
        self.dropout = nn.Dropout(dropout)
        self.leak_projection = nn.Linear(2 * n_components, hidden) if leak else None
        self.head_lh = nn.Linear(hidden, n_components)
        self.head_rh = nn.Linear(hidden, n_components)
        self.leak_a, self.leak_b = float(leak_a), float(leak_b)
        generator = torch.Generator().manual_seed(int(seed))
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                _lecun_normal_(layer.weight.data, generator)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None,
                leak: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.widen(x)
        h = self.dropout(h + self.prelu(self.residual(h)))
        if self.leak_projection is not None:
            if noise is None:
                raise ValueError("BottleneckNet with leak: pass the structured noise (n, 2k)")
            if leak is not None and not self.training:
                raise ValueError("BottleneckNet: the targets (leak) are a training input only, never at inference")
            p_leak = None if leak is None else self.leak_projection(leak)
            h = leak_input(h, self.leak_projection(noise), p_leak, self.leak_a, self.leak_b)
        return self.head_lh(h), self.head_rh(h)


def build_model(d_in: int, params: Mapping[str, Any]) -> BottleneckNet:
    return BottleneckNet(d_in, params["hidden"], params["n_components"], params["dropout"], params["leak"],
                         params["leak_a"], params["leak_b"], params["seed"])


@dataclass(frozen=True)
class TargetPCA:
    """PCA of one hemisphere's responses (their ``downsampler.PCA``: centred, not scaled).

    ``mean`` (V,), ``components`` (k, V) orthonormal rows, ``variance`` (k,) the variance of each
    component over the fit rows (ddof 1). Each component's sign makes its largest-magnitude
    loading positive, so fits on overlapping rows (pretraining, fine-tuning) agree in sign.
    """

    mean: np.ndarray
    components: np.ndarray
    variance: np.ndarray

    @classmethod
    def fit(cls, Y: np.ndarray, n_components: int, device: torch.device | str = "cpu") -> TargetPCA:
        """Exact PCA of ``Y`` (n, V) through the eigenvectors of the smaller of ``Y'Y`` and ``YY'``
        (float64 eigendecomposition), on ``device``."""
        Y = np.asarray(Y, dtype=np.float32)
        n, V = Y.shape
        if not 0 < n_components < min(n, V):
            raise ValueError(f"n_components: must be below both the fit rows ({n}) and the vertices ({V}) "
                             f"(got {n_components})")
        dev = torch.device(device)
        mean = torch.as_tensor(Y.mean(axis=0, dtype=np.float64), device=dev)
        Yc = torch.as_tensor(Y, device=dev) - mean.float()
        if V <= n:
            values, vectors = torch.linalg.eigh((Yc.T @ Yc).double())
            values, vectors = values.flip(0)[:n_components], vectors.flip(1)[:, :n_components]
            components = vectors.T
        else:
            values, vectors = torch.linalg.eigh((Yc @ Yc.T).double())
            values, vectors = values.flip(0)[:n_components], vectors.flip(1)[:, :n_components]
            components = (vectors.T.float() @ Yc).double()
            components = components / components.norm(dim=1, keepdim=True).clamp_min(1e-300)
        biggest = components.abs().argmax(dim=1)
        signs = torch.sign(components.gather(1, biggest[:, None]))
        components = components * torch.where(signs == 0, 1.0, signs)
        return cls(mean.float().cpu().numpy(), components.float().cpu().numpy(),
                   (values.clamp_min(0) / (n - 1)).float().cpu().numpy())

    @property
    def n_components(self) -> int:
        return len(self.components)

    def transform(self, Y: np.ndarray) -> np.ndarray:
        """(n, V) responses -> (n, k) components."""
        return ((np.asarray(Y, np.float32) - self.mean) @ self.components.T).astype(np.float32)

    def inverse(self, Z: np.ndarray) -> np.ndarray:
        """(n, k) components -> (n, V) responses."""
        return (np.asarray(Z, np.float32) @ self.components + self.mean).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from ..io import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, mean=self.mean, components=self.components, variance=self.variance)

    @classmethod
    def load(cls, path: str | Path) -> TargetPCA:
        with np.load(path) as f:
            return cls(f["mean"], f["components"], f["variance"])


@dataclass
class SubjectData:
    """One subject's fit rows: ``X`` (n, d_in) inputs, ``Y_lh`` (n, V_lh) and ``Y_rh`` (n, V_rh) responses."""

    X: np.ndarray
    Y_lh: np.ndarray
    Y_rh: np.ndarray

    def check(self, name: str = "subject") -> None:
        shapes = [np.shape(self.X), np.shape(self.Y_lh), np.shape(self.Y_rh)]
        if any(len(s) != 2 for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise ValueError(f"{name}: X, Y_lh and Y_rh must be 2-d arrays with one row per image "
                             f"(got shapes {', '.join(map(str, shapes))})")


@dataclass
class FittedBottleneck:
    """A fitted subject: the network (eval mode) and the PCA of each hemisphere's responses."""

    model: BottleneckNet
    pca_lh: TargetPCA
    pca_rh: TargetPCA
    params: dict[str, Any]
    result: TrainResult


# ----------------------------------------------------------------------------- training


@dataclass
class _Group:
    """Rows of one subject scored on the inner split: their indices into the pooled arrays, the
    subject's PCAs (as tensors) and their true responses."""

    rows: torch.Tensor
    mean_lh: torch.Tensor
    comp_lh: torch.Tensor
    mean_rh: torch.Tensor
    comp_rh: torch.Tensor
    Y_lh: torch.Tensor
    Y_rh: torch.Tensor


def _noise_scale(pca_lh: TargetPCA, pca_rh: TargetPCA) -> np.ndarray:
    """Standard deviations (2k,) of the structured noise: those of the components (their ``PCA.sample``)."""
    return np.sqrt(np.concatenate([pca_lh.variance, pca_rh.variance])).astype(np.float32)


def _inference_noise(scale: torch.Tensor, mode: str, seed: int) -> torch.Tensor:
    """The noise (n, 2k) removed at inference: one seeded draw per row, or zeros (``mean``)."""
    if mode == "mean":
        return torch.zeros_like(scale)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(scale.shape, generator=generator).to(scale.device) * scale


def _predict_components(model: BottleneckNet, X: torch.Tensor, scale: torch.Tensor, params: Mapping[str, Any],
                        batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Components (n, k) of each hemisphere at inference; ``scale`` (n, 2k) the noise's per row."""
    model.eval()
    noise = _inference_noise(scale, params["inference_noise"], params["seed"]) if params["leak"] else None
    lh, rh = [], []
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            out = model(X[i:i + batch_size], None if noise is None else noise[i:i + batch_size])
            lh.append(out[0].float())
            rh.append(out[1].float())
    k = model.head_lh.out_features
    empty = X.new_zeros((0, k))
    return (torch.cat(lh) if lh else empty), (torch.cat(rh) if rh else empty)


def _vertex_correlation(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Pearson r of each column over the rows (their ``batch_pearsonr``); 0 where a column is constant."""
    pred = pred - pred.mean(0)
    true = true - true.mean(0)
    denom = torch.sqrt((pred * pred).sum(0) * (true * true).sum(0))
    return torch.where(denom > 0, (pred * true).sum(0) / denom.clamp_min(1e-30), torch.zeros_like(denom))


def _inner_split(n: int, fraction: float, seed: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    n_inner = max(1, round(fraction * n))
    if n - n_inner < 2:
        raise ValueError(f"bottleneck: {n} fit images leave none to train on after the inner validation split "
                         f"(inner_val_fraction {fraction})")
    perm = np.random.default_rng([int(seed), n, salt]).permutation(n)
    return np.sort(perm[n_inner:]), np.sort(perm[:n_inner])


def _train(model: BottleneckNet, X: torch.Tensor, Z: torch.Tensor, scale: torch.Tensor, train_rows: torch.Tensor,
           groups: list[_Group], params: Mapping[str, Any], epochs: int, device: torch.device,
           checkpoint: str | Path | None, key: str, desc: str, progress: bool) -> TrainResult:
    """Lion on ``train_rows`` of the pooled (X, Z, scale), the best epoch by the groups' mean vertex r.

    ``Z`` (N, 2k): each row's target components (left then right) in its subject's PCA; ``scale``
    (N, 2k): the standard deviations of the noise for each row (its subject's).
    """
    k = params["n_components"]
    loss_fn = racing_loss if params["racing"] else mse_loss
    optimizer = Lion(model.parameters(), lr=params["lr"], betas=(params["beta1"], params["beta2"]),
                     weight_decay=params["weight_decay"])
    scale_cpu = scale.cpu()
    bs = params["batch_size"]

    def batches(epoch: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        perm = train_rows.cpu()[torch.randperm(len(train_rows), generator=generator)]
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            # Drawn from the loop's generator (on the CPU), so a resumed run draws the same noise.
            noise = torch.randn((len(idx), 2 * k), generator=generator) * scale_cpu[idx] if params["leak"] else None
            yield idx, noise

    def step(batch) -> torch.Tensor:
        idx, noise = batch
        idx = idx.to(device)
        z = Z[idx]
        pred_lh, pred_rh = model(X[idx], None if noise is None else noise.to(device), z if params["leak"] else None)
        return loss_fn(pred_lh, z[:, :k], pred_rh, z[:, k:])

    def inner_loss() -> float:
        rs = []
        for g in groups:
            lh, rh = _predict_components(model, X[g.rows], scale[g.rows], params)
            with torch.autocast(device.type, enabled=False):  # decode and correlate in float32
                r_lh = _vertex_correlation(lh @ g.comp_lh + g.mean_lh, g.Y_lh)
                r_rh = _vertex_correlation(rh @ g.comp_rh + g.mean_rh, g.Y_rh)
            rs.append(float(torch.cat([r_lh, r_rh]).mean()))
        return -float(np.mean(rs))

    return train_epochs(model, optimizer, step, batches, epochs=epochs, seed=params["seed"], inner_loss=inner_loss,
                        device=device, checkpoint=checkpoint, key=key, progress=progress, desc=desc)


def _key(phase: str, key: str, params: Mapping[str, Any], facts: list[Any]) -> str:
    """The checkpoint key: the caller's (which must name the data: subject, fold, features), the
    phase, the parameters and ``facts`` (shapes, excluded rows, the initial state's digest)."""
    text = json.dumps({"phase": phase, "key": key, "params": dict(sorted(params.items())), "facts": facts},
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def _subject_arrays(data: SubjectData, rows: np.ndarray, params: Mapping[str, Any], device: torch.device, salt: int):
    """PCAs on ``rows`` of a subject, their components, noise scales and inner split."""
    every = len(rows) == len(data.X)
    Y_lh = np.asarray(data.Y_lh, np.float32) if every else np.asarray(data.Y_lh, np.float32)[rows]
    Y_rh = np.asarray(data.Y_rh, np.float32) if every else np.asarray(data.Y_rh, np.float32)[rows]
    pca_lh = TargetPCA.fit(Y_lh, params["n_components"], device)
    pca_rh = TargetPCA.fit(Y_rh, params["n_components"], device)
    Z = np.concatenate([pca_lh.transform(Y_lh), pca_rh.transform(Y_rh)], axis=1)
    fit_rows, inner = _inner_split(len(rows), params["inner_val_fraction"], params["seed"], salt)
    return pca_lh, pca_rh, Z, Y_lh[inner], Y_rh[inner], fit_rows, inner


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=device)


def _group(rows: np.ndarray, pca_lh: TargetPCA, pca_rh: TargetPCA, Y_lh: np.ndarray, Y_rh: np.ndarray,
           device: torch.device) -> _Group:
    t = [_tensor(a, device) for a in (pca_lh.mean, pca_lh.components, pca_rh.mean, pca_rh.components, Y_lh, Y_rh)]
    return _Group(torch.as_tensor(rows, device=device), *t)


def pretrain(subjects: Mapping[str, SubjectData], params: Mapping[str, Any] | None = None,
             device: torch.device | str = "cpu", checkpoint: str | Path | None = None, key: str = "",
             exclude: Mapping[str, np.ndarray] | None = None,
             progress: bool = False) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """Pretrain one network on the pooled fit images of all ``subjects`` for ``pretrain_epochs``.

    Each subject's targets are its own PCA components (PCAs fitted on its pretraining rows); the
    trunk, the two heads and the leak projection are shared by all subjects, as their checkpoint
    ``all`` is loaded whole into every subject's network. ``exclude[name]``: row indices of that
    subject never used (neither in the PCA nor in training nor in the inner split), e.g. images
    in any subject's validation split. Each subject's ``Y_lh``/``Y_rh`` is read once, one subject
    at a time (a memory map or zarr array is fine).

    Returns the state dict (CPU tensors) of the best inner epoch, for :func:`fit` ``init``.
    """
    params = _resolved(params)
    dev = torch.device(device)
    exclude = dict(exclude or {})
    unknown = sorted(set(exclude) - set(subjects))
    if unknown:
        raise ValueError(f"exclude: {unknown[0]!r} is not one of the subjects ({', '.join(sorted(subjects))})")
    if not subjects:
        raise ValueError("pretrain: no subjects given")
    d_in = {np.shape(s.X)[1] for s in subjects.values()}
    if len(d_in) != 1:
        raise ValueError(f"pretrain: every subject's X must have the same columns (got {sorted(d_in)})")
    Xs, Zs, scales, train_rows, groups, shapes, offset = [], [], [], [], [], [], 0
    for salt, name in enumerate(sorted(subjects)):
        data = subjects[name]
        data.check(name)
        n = len(data.X)
        drop = np.unique(np.asarray(exclude.get(name, []), dtype=np.int64))
        if len(drop) and (drop.min() < 0 or drop.max() >= n):
            raise ValueError(f"exclude[{name!r}]: row indices must be in [0, {n}) (the subject's fit rows)")
        rows = np.setdiff1d(np.arange(n), drop)
        pca_lh, pca_rh, Z, Yi_lh, Yi_rh, fit_rows, inner = _subject_arrays(data, rows, params, dev, salt)
        Xs.append(np.asarray(data.X, np.float32)[rows])
        Zs.append(Z)
        scales.append(np.broadcast_to(_noise_scale(pca_lh, pca_rh), Z.shape))
        train_rows.append(fit_rows + offset)
        groups.append(_group(inner + offset, pca_lh, pca_rh, Yi_lh, Yi_rh, dev))
        shapes.append([name, n, np.shape(data.Y_lh)[1], np.shape(data.Y_rh)[1], _digest([drop])])
        offset += len(rows)
    X, Z, scale = (_tensor(np.concatenate(a), dev) for a in (Xs, Zs, scales))
    model = build_model(X.shape[1], params).to(dev)
    result = _train(model, X, Z, scale, torch.as_tensor(np.concatenate(train_rows), device=dev), groups, params,
                    params["pretrain_epochs"], dev, checkpoint, _key("pretrain", key, params, shapes),
                    "bottleneck pretraining", progress)
    log.info("bottleneck pretraining: %d subjects, %d images, %d epochs (best %d), inner r %.4f", len(subjects),
             offset, result.epochs, result.best_epoch, -result.inner_loss)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, result


def fit(data: SubjectData, params: Mapping[str, Any] | None = None, device: torch.device | str = "cpu",
        checkpoint: str | Path | None = None, key: str = "", init: Mapping[str, torch.Tensor] | None = None,
        progress: bool = False) -> FittedBottleneck:
    """Fit one subject for ``epochs``: from ``init`` (the :func:`pretrain` state) when ``pretrain`` is
    true, else from a seeded initialisation. The targets' PCAs are fitted on all of ``data``'s rows."""
    params = _resolved(params)
    if params["pretrain"] and init is None:
        raise ValueError("pretrain is true: pass init, the state returned by pretrain() (or set pretrain: false)")
    if not params["pretrain"] and init is not None:
        raise ValueError("pretrain is false but init was given: drop init or set pretrain: true")
    data.check()
    dev = torch.device(device)
    rows = np.arange(len(data.X))
    pca_lh, pca_rh, Z, Yi_lh, Yi_rh, fit_rows, inner = _subject_arrays(data, rows, params, dev, 0)
    model = build_model(np.shape(data.X)[1], params).to(dev)
    if init is not None:
        try:
            model.load_state_dict(init)
        except RuntimeError as err:
            raise ValueError(f"init: not a state of this network (pretrained with other hidden, n_components, "
                             f"leak or inputs?): {err}") from err
    X, Zt = _tensor(data.X, dev), _tensor(Z, dev)
    scale = _tensor(np.broadcast_to(_noise_scale(pca_lh, pca_rh), Z.shape), dev)
    # A fine-tune resumes only onto the same pretrained state.
    init_digest = None if init is None else _digest(v.detach().cpu().numpy() for _, v in sorted(init.items()))
    shapes = [len(rows), np.shape(data.Y_lh)[1], np.shape(data.Y_rh)[1], init_digest]
    result = _train(model, X, Zt, scale, torch.as_tensor(fit_rows, device=dev),
                    [_group(inner, pca_lh, pca_rh, Yi_lh, Yi_rh, dev)], params, params["epochs"], dev, checkpoint,
                    _key("fit", key, params, shapes), "bottleneck fit", progress)
    log.info("bottleneck fit: %d images, %d epochs (best %d), inner r %.4f", len(rows), result.epochs,
             result.best_epoch, -result.inner_loss)
    return FittedBottleneck(model.eval(), pca_lh, pca_rh, params, result)


def predict(fitted: FittedBottleneck, X: np.ndarray, device: torch.device | str | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Responses (n, V_lh) and (n, V_rh) for inputs ``X`` (n, d_in); no target enters.

    With ``inference_noise: sample`` row i gets the i-th draw of the seeded noise, so a row's
    prediction depends (slightly) on its position in ``X``; ``mean`` removes that.
    """
    dev = torch.device(device) if device is not None else next(fitted.model.parameters()).device
    model = fitted.model.to(dev)
    Xt = _tensor(X, dev)
    scale = _tensor(np.broadcast_to(_noise_scale(fitted.pca_lh, fitted.pca_rh),
                                    (len(Xt), 2 * fitted.pca_lh.n_components)), dev)
    lh, rh = _predict_components(model, Xt, scale, fitted.params)
    return fitted.pca_lh.inverse(lh.cpu().numpy()), fitted.pca_rh.inverse(rh.cpu().numpy())


def fit_predict(data: SubjectData, X_pred: np.ndarray, params: Mapping[str, Any] | None = None,
                device: torch.device | str = "cpu", checkpoint: str | Path | None = None, key: str = "",
                init: Mapping[str, torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`fit` then :func:`predict` on ``X_pred``: (pred_lh, pred_rh, training summary)."""
    fitted = fit(data, params, device, checkpoint, key, init)
    pred_lh, pred_rh = predict(fitted, X_pred)
    return pred_lh, pred_rh, fitted.result.as_dict()
