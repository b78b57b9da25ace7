"""The torch readouts: ``torch_linear`` (one nn.Linear per region) and ``mlp`` (an MLP per region).

Both train with MSE, AdamW and StepLR on the fit images of a fold, seeded and deterministic on
the CPU (same seed, same thread count: same predictions). Responses are z-scored per vertex on
the fit images (``standardize_targets``) and predictions mapped back. The ``mlp`` stops early on
an inner split of the fit images (``inner_val_fraction``), never on the validation split that
scores are computed on, and keeps the weights of its best inner-validation epoch.

This module imports torch; the registry (:mod:`nsdflow.readouts`) imports it only when a torch
readout fits, so ridge jobs stay light.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


class Block(nn.Module):
    """Linear, BatchNorm1d, LeakyReLU, optional dropout; ``residual`` adds the input when widths match."""

    def __init__(self, d_in: int, d_out: int, dropout: float, negative_slope: float, residual: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.LeakyReLU(negative_slope)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)
        self.residual = residual and d_in == d_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def build_model(kind: str, d_in: int, d_out: int, params: dict[str, Any]) -> nn.Module:
    """``linear``: ``nn.Linear(d_in, d_out)``; ``mlp``: hidden :class:`Block` s then a linear head."""
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind != "mlp":
        raise ValueError(f"unknown torch readout model {kind!r}")
    blocks, width = [], d_in
    for h in params["hidden"]:
        blocks.append(Block(width, h, params["dropout"], params["negative_slope"], params["residual"]))
        width = h
    return nn.Sequential(*blocks, nn.Linear(width, d_out))


#: Multiply-adds per training step below which intra-op threads cost more than they save.
SINGLE_THREAD_WORK = 50_000_000
_THREADS = torch.get_num_threads()  # as the job was given (OMP_NUM_THREADS: the rule's threads)


def _limit_threads(d_in: int, d_out: int, params: dict[str, Any], device: torch.device) -> None:
    """One CPU thread for small steps: a batch of a region's model is far too small to split, and
    spinning threads crawl when the cores are busy (several such jobs, or other work)."""
    if device.type != "cpu":
        return
    widths = [d_in, *params.get("hidden", []), d_out]
    work = params["batch_size"] * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    torch.set_num_threads(1 if work < SINGLE_THREAD_WORK else _THREADS)


def _batches(n: int, batch_size: int, generator: torch.Generator, drop_single: bool) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_single and len(out) > 1 and len(out[-1]) == 1:  # BatchNorm cannot train on one image
        out.pop()
    return out


def _loss(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, batch_size: int = 4096) -> float:
    model.eval()
    with torch.no_grad():
        total = sum(float(((model(X[i:i + batch_size]) - Y[i:i + batch_size]) ** 2).sum())
                    for i in range(0, len(X), batch_size))
    return total / max(1, Y.numel())


def train(
    kind: str,
    X: np.ndarray,
    Y: np.ndarray,
    params: dict[str, Any],
    device: str = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a ``linear`` or ``mlp`` model on (X, Y) (both float32, already as they should be fitted).

    Returns the model (eval mode, best weights for the mlp) and ``{"epochs", "best_epoch",
    "train_loss", "inner_val_loss"}``.
    """
    from tqdm import tqdm

    torch.manual_seed(params["seed"])
    dev = torch.device(device)
    _limit_threads(X.shape[1], Y.shape[1], params, dev)
    Xt = torch.as_tensor(np.array(X, dtype=np.float32), device=dev)
    Yt = torch.as_tensor(np.array(Y, dtype=np.float32), device=dev)
    n = len(Xt)
    inner = None
    if kind == "mlp":
        rng = np.random.default_rng([int(params["seed"]), n])
        n_inner = max(1, int(round(params["inner_val_fraction"] * n)))
        if n - n_inner < 2:
            raise ValueError(f"mlp: {n} fit images leave none to train on after the inner validation split "
                             f"(inner_val_fraction {params['inner_val_fraction']})")
        perm = rng.permutation(n)
        inner = torch.as_tensor(np.sort(perm[:n_inner]), device=dev)
        train_rows = torch.as_tensor(np.sort(perm[n_inner:]), device=dev)
        X_in, Y_in = Xt[inner], Yt[inner]
        Xt, Yt = Xt[train_rows], Yt[train_rows]
        n = len(Xt)
    model = build_model(kind, Xt.shape[1], Yt.shape[1], params).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=params["step_size"], gamma=params["gamma"])
    gen = torch.Generator().manual_seed(params["seed"])
    best = (np.inf, 0, None)
    info: dict[str, Any] = {"epochs": 0, "best_epoch": 0, "train_loss": np.nan, "inner_val_loss": np.nan}
    bar = tqdm(range(params["epochs"]), desc=f"{kind} training", unit="epoch", disable=not progress, mininterval=2)
    for epoch in bar:
        model.train()
        total = 0.0
        for idx in _batches(n, params["batch_size"], gen, drop_single=kind == "mlp"):
            idx = idx.to(dev)
            opt.zero_grad(set_to_none=True)
            loss = ((model(Xt[idx]) - Yt[idx]) ** 2).mean()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        info.update(epochs=epoch + 1, train_loss=total / n)
        if inner is not None:
            val = _loss(model, X_in, Y_in)
            if val < best[0]:
                best = (val, epoch + 1, copy.deepcopy(model.state_dict()))
            elif epoch + 1 - best[1] >= params["patience"]:
                break
    if inner is not None:
        model.load_state_dict(best[2])
        info.update(best_epoch=best[1], inner_val_loss=best[0])
    else:
        info["best_epoch"] = info["epochs"]
    model.eval()
    return model, info


def predict(model: nn.Module, X: np.ndarray, device: str = "cpu", batch_size: int = 4096) -> np.ndarray:
    model.eval()
    Xt = torch.as_tensor(np.array(X, dtype=np.float32), device=torch.device(device))
    with torch.no_grad():
        out = [model(Xt[i:i + batch_size]) for i in range(0, max(len(Xt), 1), batch_size)]
    return torch.cat(out).cpu().numpy().astype(np.float32)


def fit_predict_torch(
    kind: str,
    X_fit: np.ndarray,
    Y_fit: np.ndarray,
    X_pred: np.ndarray,
    params: dict[str, Any],
    device: str = "cpu",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Train on (X_fit, Y_fit), predict X_pred; the readouts' ``fit_predict`` for torch models.

    Deterministic on the CPU without ``torch.use_deterministic_algorithms`` (whose first call
    imports torch's compiler, seconds per job): these layers have no nondeterministic CPU kernels.
    """
    Y_fit = np.asarray(Y_fit, dtype=np.float32)
    t = Y_fit.shape[1]
    mean = Y_fit.mean(axis=0, dtype=np.float64).astype(np.float32)
    scale = np.ones(t, np.float32)
    if params["standardize_targets"]:
        scale = Y_fit.std(axis=0, dtype=np.float64).astype(np.float32)
        scale[scale == 0] = 1.0
        Y = (Y_fit - mean) / scale
    else:
        Y = Y_fit
    model, info = train(kind, X_fit, Y, params, device)
    if len(X_pred):
        pred = predict(model, X_pred, device)
    else:
        pred = np.zeros((0, t), np.float32)
    if params["standardize_targets"]:
        pred = pred * scale + mean
    log.info("%s: %d targets, %d epochs (best %d), train loss %.4f, inner-val loss %.4f", kind, t, info["epochs"],
             info["best_epoch"], info["train_loss"], info["inner_val_loss"])
    return pred.astype(np.float32), {}
