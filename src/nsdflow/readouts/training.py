"""One training loop for every trained readout: epochs of minibatches, the best epoch on an inner
split, gradient clipping, mixed precision on a GPU, and atomic checkpoints a killed job resumes from.

The readouts trained per subject or hemisphere (the transformer decoder, the bottleneck network,
the Gaussian readout) differ in their model, loss and data; what they share is here, so that a
fix to resuming or early stopping reaches all of them (the per-region torch linear layer and MLP,
seconds each, have their own loop in :mod:`.torch_models` and keep no checkpoints)::

    result = train_epochs(model, optimizer, step, batches, epochs=20, inner_loss=evaluate,
                          checkpoint="results/.../ckpt.pt", key=spec_hash, clip=0.1, device=dev)

``step(batch) -> loss`` computes one minibatch's loss (the loop does zero_grad, backward,
clipping and the optimiser step); ``batches(epoch, generator)`` yields the minibatches of an
epoch, shuffled with ``generator`` only, so that a run resumed from a checkpoint draws the same
batches as one that was never interrupted.

Checkpoints hold the model, optimiser and scheduler states, the best state so far, the epoch and
every random state the loop uses; they are written under a temporary name and renamed
(:func:`nsdflow.io.atomic_path`) after each epoch, so a SIGKILL at any moment leaves the last
complete epoch on disk. A checkpoint written for another ``key`` (other parameters, data or
fold) is ignored, never resumed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

log = logging.getLogger(__name__)

#: Bumped when the checkpoint's contents change meaning.
CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    """What :func:`train_epochs` did: the model holds the best (or last) weights on return."""

    epochs: int  # epochs run in all (resumed ones included)
    best_epoch: int  # the epoch whose weights the model holds (1-based)
    train_loss: float  # mean training loss of the last epoch
    inner_loss: float  # the best inner-split loss (NaN without an inner split)
    resumed_from: int = 0  # epochs found in the checkpoint
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def autocast(device: torch.device | str, amp: bool | str = "auto"):
    """bfloat16 autocast on CUDA (``amp`` auto or True), nothing on the CPU (float32 there)."""
    device = torch.device(device)
    use = device.type == "cuda" and amp in (True, "auto", "bfloat16")
    return torch.autocast("cuda", dtype=torch.bfloat16) if use else contextlib.nullcontext()


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` under a temporary name, then renamed: a kill leaves the previous checkpoint."""
    from ..io import atomic_path

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it was written for ``key`` in this format, else None.

    Checkpoints are the pipeline's own files (never a user's download), read with
    ``weights_only=True`` all the same: tensors, numbers, strings and containers only.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file is not resumed
        log.warning("%s: not a readable checkpoint (%s): starting afresh", path, err)
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("key") != key:
        log.info("%s was written for other settings: starting afresh", path)
        return None
    return state


def train_epochs(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: Callable[[Any], torch.Tensor],
    batches: Callable[[int, torch.Generator], Iterable[Any]],
    *,
    epochs: int,
    seed: int = 0,
    inner_loss: Callable[[], float] | None = None,
    patience: int | None = None,
    clip: float | None = None,
    scheduler: Any = None,
    device: torch.device | str = "cpu",
    amp: bool | str = "auto",
    checkpoint: str | Path | None = None,
    key: str = "",
    progress: bool = True,
    desc: str = "training",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` for up to ``epochs`` epochs; see the module docstring.

    Parameters
    ----------
    step : callable
        ``step(batch) -> loss`` (a scalar tensor); runs under autocast on CUDA.
    batches : callable
        ``batches(epoch, generator)`` yields the epoch's minibatches; shuffle with ``generator``.
    inner_loss : callable, optional
        The loss on an inner split of the fit images (never the scoring split), evaluated after
        every epoch; the weights of the best epoch are restored at the end. Without it the last
        epoch's weights are kept.
    patience : int, optional
        Stop after this many epochs without a better ``inner_loss``.
    clip : float, optional
        Clip the gradients' global norm to this.
    checkpoint, key : path, str
        Where to keep the resumable state, and what it must have been written for.

    Returns
    -------
    TrainResult
    """
    from tqdm import tqdm

    t0 = time.time()
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    start, best_loss, best_epoch, best_state, history = 0, math.inf, 0, None, []
    train_loss = math.nan
    state = load_checkpoint(checkpoint, key) if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        start, best_loss, best_epoch = int(state["epoch"]), float(state["best_loss"]), int(state["best_epoch"])
        best_state, history = state.get("best_state"), list(state.get("history", []))
        train_loss = history[-1]["train_loss"] if history else math.nan
        log.info("%s: resuming after epoch %d of %d (%s)", desc, start, epochs, checkpoint)
    stopped = start >= epochs or (patience is not None and inner_loss is not None and start - best_epoch >= patience)
    bar = tqdm(total=epochs, initial=start, desc=desc, unit="epoch", disable=not progress, mininterval=2)
    epoch = start
    while not stopped and epoch < epochs:
        model.train()
        total, count = 0.0, 0
        for batch in batches(epoch, generator):
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp):
                loss = step(batch)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            total += float(loss.detach())
            count += 1
        if scheduler is not None:
            scheduler.step()
        epoch += 1
        train_loss = total / max(count, 1)
        record = {"epoch": epoch, "train_loss": train_loss}
        if inner_loss is not None:
            model.eval()
            with torch.no_grad(), autocast(device, amp):
                value = float(inner_loss())
            record["inner_loss"] = value
            if value < best_loss:
                best_loss, best_epoch = value, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            if patience is not None and epoch - best_epoch >= patience:
                stopped = True
        history.append(record)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"}, refresh=False)
        if checkpoint:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "key": key, "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": _rng_state(generator), "best_loss": best_loss, "best_epoch": best_epoch,
                "best_state": best_state, "history": history,
            })
        if on_epoch is not None:  # after the checkpoint: what it sees is on disk
            on_epoch(epoch, record)
    bar.close()
    if inner_loss is not None and best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = epoch
    model.eval()
    return TrainResult(epochs=epoch, best_epoch=best_epoch, train_loss=train_loss,
                       inner_loss=best_loss if inner_loss is not None else math.nan, resumed_from=start,
                       seconds=round(time.time() - t0, 2), history=history)
