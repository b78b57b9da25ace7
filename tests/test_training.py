"""The shared training loop: a resumed run equals an uninterrupted one; the best epoch is kept."""

from __future__ import annotations

import math

import pytest
import torch

from nsdflow.readouts.training import load_checkpoint, train_epochs


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=g)
    Y = X @ torch.randn(5, 3, generator=g) + 0.1 * torch.randn(64, 3, generator=g)
    return X, Y


def _run(tmp_path, epochs, ckpt=True, key="k", stop_after=None, inner=False, patience=None):
    X, Y = _problem()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def batches(epoch, gen):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 16):
            yield perm[i:i + 16]

    def step(idx):
        return ((model(X[idx]) - Y[idx]) ** 2).mean()

    def on_epoch(epoch, record):
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt  # a kill right after the epoch's checkpoint

    inner_loss = (lambda: float(((model(X[:8]) - Y[:8]) ** 2).mean())) if inner else None
    result = train_epochs(model, opt, step, batches, epochs=epochs, seed=3, inner_loss=inner_loss, patience=patience,
                          clip=1.0, checkpoint=tmp_path / "ckpt.pt" if ckpt else None, key=key, progress=False,
                          on_epoch=on_epoch)
    return model, result


def test_resumed_training_equals_uninterrupted(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole, _ = _run(tmp_path / "a", 6)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", 6, stop_after=4)
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt", "k")["epoch"] == 4
    resumed, result = _run(tmp_path / "b", 6)
    assert result.resumed_from == 4 and result.epochs == 6
    for p, q in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    _run(tmp_path, 3, key="one")
    _, result = _run(tmp_path, 3, key="two")
    assert result.resumed_from == 0 and result.epochs == 3


def test_best_inner_epoch_is_kept_and_patience_stops(tmp_path):
    model, result = _run(tmp_path, 40, ckpt=False, inner=True, patience=3)
    losses = [h["inner_loss"] for h in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.epochs == len(losses) and (result.epochs == 40 or result.epochs - result.best_epoch == 3)
    assert math.isclose(result.inner_loss, min(losses))
