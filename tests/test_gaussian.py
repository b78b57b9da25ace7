"""The Gaussian readout: the search finds planted positions, training refines them, resuming is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nsdflow.features.store import ArraySource
from nsdflow.readouts import gaussian_net as G
from nsdflow.readouts.gaussian import GaussianReadout
from nsdflow.readouts.ridge import RidgeCV


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests of seconds, not of threads


def _bilinear(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Maps (n, C, H, W) read at normalised (x, y) per vertex, the pixel centres at -1 ... 1: (n, C, V)."""
    H, W = m.shape[2:]
    u, v = (x + 1) / 2 * (W - 1), (y + 1) / 2 * (H - 1)
    j, i = np.clip(np.floor(u).astype(int), 0, W - 2), np.clip(np.floor(v).astype(int), 0, H - 2)
    fu, fv = u - j, v - i
    return (m[:, :, i, j] * (1 - fu) * (1 - fv) + m[:, :, i, j + 1] * fu * (1 - fv)
            + m[:, :, i + 1, j] * (1 - fu) * fv + m[:, :, i + 1, j + 1] * fu * fv)


def _planted(n=250, V=24, shapes=((4, 13, 13),), smooth=1.5, noise=0.5, on_grid=None, seed=0):
    """Random maps (spatially smooth), each vertex a random linear readout of every level at one planted
    position (on a grid of ``on_grid`` points per axis, else anywhere), plus noise of ``noise`` x the
    signal's standard deviation. Returns (maps, Y, planted mu (V, 2), noiseless signal)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    maps = [gaussian_filter(rng.standard_normal((n, *s)), (0, 0, smooth, smooth), mode="nearest").astype(np.float32)
            for s in shapes]
    if on_grid:
        mu = np.linspace(-1, 1, on_grid)[rng.integers(0, on_grid, (V, 2))]
    else:
        mu = rng.uniform(-0.9, 0.9, (V, 2))
    feats = np.concatenate([_bilinear(m, mu[:, 0], mu[:, 1]) for m in maps], axis=1)
    signal = np.einsum("ncv,cv->nv", feats, rng.standard_normal((feats.shape[1], V)))
    Y = signal + noise * signal.std(axis=0) * rng.standard_normal(signal.shape)
    return maps, Y.astype(np.float32), mu, signal


def _r(pred, y):
    pred, y = pred - pred.mean(0), y - y.mean(0)
    return (pred * y).sum(0) / np.sqrt((pred**2).sum(0) * (y**2).sum(0))


def test_point_weights_are_what_grid_sample_reads():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((3, 2, 7, 9)).astype(np.float32)
    pts = rng.uniform(-1, 1, (5, 2))
    wy, wx = G.axis_weights(7, pts[:, 1], 0.0), G.axis_weights(9, pts[:, 0], 0.0)
    expected = np.einsum("nchw,vh,vw->ncv", m, wy, wx)
    grid = torch.as_tensor(pts, dtype=torch.float32)[None, :, None, :].expand(3, -1, -1, -1)
    got = F.grid_sample(torch.as_tensor(m), grid, align_corners=True)[..., 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(_bilinear(m, pts[:, 0], pts[:, 1]), expected, atol=1e-5)
    g = G.axis_weights(9, pts[:, 0], 0.3)
    np.testing.assert_allclose(g.sum(axis=1), 1.0)
    assert (np.argmax(g, axis=1) == np.round((pts[:, 0] + 1) / 2 * 8)).all()  # centred on the point


@pytest.mark.parametrize("n, channels, noise, recovered", [
    (200, 4, 0.5, 0.95),  # more images than channels: the p x p covariance's eigenvectors (30 of 30 found)
    (40, 48, 0.2, 0.75),  # more channels than images: the n x n Gram matrix's (24 of 30)
])
def test_search_recovers_planted_cells_with_the_ridge_fit_there(n, channels, noise, recovered):
    maps, Y, mu, _ = _planted(n=n, V=30, shapes=((channels, 13, 13),), smooth=0.0, noise=noise, on_grid=13)
    result = G.grid_search_init(maps, Y, positions=13, widths=[0.0, 0.2])
    found = np.all(np.abs(result.mu - mu) < 1e-6, axis=1)
    assert found.mean() >= recovered and (result.width[found] == 0).mean() >= 0.9 and (result.score > 0.3).all()
    v = 0
    X = _bilinear(maps[0], result.mu[[v], 0], result.mu[[v], 1])[:, :, 0]
    X = (X - X.mean(0)) / X.std(0)
    ref = RidgeCV(cv="gcv").fit(X, Y[:, v])
    assert result.alpha[v] == ref.alpha_
    np.testing.assert_allclose(result.weight[:, v] * result.scale[:, v], ref.coef_, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(G.search_predict(maps, result)[:, v], ref.predict(X), rtol=1e-3, atol=1e-3)


def test_the_model_starts_as_the_search_and_evaluates_at_mu():
    maps, Y, _, _ = _planted(n=60, V=8, shapes=((3, 9, 11), (2, 5, 6)))
    result = G.grid_search_init(maps, Y, positions=7, widths=[0.0])
    model = G.GaussianReadout([m.shape[1:] for m in maps], 8, sigma_init=0.2)
    model.load_search(result)
    X = [torch.as_tensor(m) for m in maps]
    model.eval()
    with torch.no_grad():
        first, second = model(X), model(X)
        model.train()
        jittered, jittered_again, at_mu = model(X), model(X), model(X, sample=False)
    np.testing.assert_allclose(first.numpy(), G.search_predict(maps, result), rtol=1e-4, atol=1e-4)
    assert torch.equal(first, second) and torch.equal(at_mu, first)
    assert not torch.equal(jittered, jittered_again) and not torch.allclose(jittered, first)


def test_training_refines_positions_between_grid_points_and_beats_the_search():
    maps, Y, mu, signal = _planted()
    src = [ArraySource(m) for m in maps]
    train, test = np.arange(150), np.arange(150, 250)
    pred_search, info_search = G.fit_predict(src, train, Y[train], test, {"positions": 7, "init_only": True})
    pred, info = G.fit_predict(src, train, Y[train], test, {"positions": 7})
    pixel = 2 / 12
    error, error_search = np.abs(info["mu"] - mu).max(axis=1), np.abs(info_search["mu"] - mu).max(axis=1)
    assert np.mean(error <= pixel) >= 0.95  # 24 of 24 here; the 7-point grid alone: 20 of 24
    assert np.median(error) < 0.5 * np.median(error_search)
    assert info["kept"] == "trained"
    assert _r(pred, signal[test]).mean() > _r(pred_search, signal[test]).mean() + 0.03  # 0.98 against 0.91
    assert np.median(info["sigma"]) < 0.5 * GaussianReadout.params["sigma_init"].default  # the jitter shrank


def test_two_levels_of_different_sizes():
    maps, Y, mu, signal = _planted(shapes=((4, 10, 14), (3, 5, 7)), smooth=1.0)
    src = [ArraySource(m) for m in maps]
    train, test = np.arange(150), np.arange(150, 250)
    pred, info = G.fit_predict(src, train[::-1], Y[train][::-1], test[::-1], {"positions": 8})
    assert pred.shape == (100, 24) and info["mu"].shape == (24, 2) and info["sigma"].shape == (24, 2)
    assert np.mean(np.abs(info["mu"] - mu).max(axis=1) <= 2 / 13) >= 0.95  # one pixel of the finer level
    assert _r(pred[::-1], signal[test]).mean() > 0.95


def test_the_hidden_stage_starts_at_zero_and_trains():
    maps, Y, _, signal = _planted(n=120, V=10)
    X = [torch.as_tensor(m) for m in maps]
    torch.manual_seed(0)
    plain, hidden = G.GaussianReadout([m.shape[1:] for m in maps], 10), G.GaussianReadout([m.shape[1:] for m in maps],
                                                                                            10, hidden=3)
    assert hidden.hidden_weight.shape == (3, 10)
    hidden.load_state_dict(plain.state_dict(), strict=False)
    plain.eval(), hidden.eval()
    with torch.no_grad():
        assert torch.equal(plain(X), hidden(X))
    src = [ArraySource(m) for m in maps]
    pred, info = G.fit_predict(src, np.arange(80), Y[:80], np.arange(80, 120), {"positions": 7, "hidden": 3,
                                                                             "inner_val_fraction": 0.25})
    assert info["kept"] == "trained" and _r(pred, signal[80:]).mean() > 0.9


def test_a_resumed_training_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    maps, Y, _, _ = _planted(n=100, V=6)
    src = [ArraySource(m) for m in maps]
    params = {"positions": 7, "epochs": 6, "patience": 6}
    whole, info = G.fit_predict(src, np.arange(80), Y[:80], np.arange(80, 100), params)
    again, _ = G.fit_predict(src, np.arange(80), Y[:80], np.arange(80, 100), params)
    assert np.array_equal(whole, again)  # seeded: the same predictions
    train_epochs = G.train_epochs

    def killed_after_epoch_3(*args, **kwargs):
        def on_epoch(epoch, record):
            if epoch == 3:
                raise KeyboardInterrupt  # a kill right after the epoch's checkpoint
        return train_epochs(*args, on_epoch=on_epoch, **kwargs)

    monkeypatch.setattr(G, "train_epochs", killed_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        G.fit_predict(src, np.arange(80), Y[:80], np.arange(80, 100), params, checkpoint=tmp_path / "c.pt", key="k")
    monkeypatch.setattr(G, "train_epochs", train_epochs)
    resumed, info_resumed = G.fit_predict(src, np.arange(80), Y[:80], np.arange(80, 100), params,
                                          checkpoint=tmp_path / "c.pt", key="k")
    assert info_resumed["training"]["resumed_from"] == 3 and info_resumed["training"]["epochs"] == 6
    assert np.array_equal(resumed, whole)
    assert np.array_equal(info_resumed["mu"], info["mu"])


def test_parameters_and_inputs_are_checked():
    assert GaussianReadout().normalize({})["positions"] == 27
    with pytest.raises(ValueError, match="width"):
        GaussianReadout().normalize({"width": [0.1]})
    with pytest.raises(ValueError, match="widths"):
        GaussianReadout().normalize({"widths": [-0.1]})
    with pytest.raises(ValueError, match="hidden"):
        GaussianReadout().normalize({"hidden": 1.5})
    src = [ArraySource(np.zeros((10, 2, 4, 4), np.float32))]
    with pytest.raises(ValueError, match="Y must be"):
        G.fit_predict(src, np.arange(8), np.zeros((7, 3)), np.arange(8, 10))
    with pytest.raises(ValueError, match="pred_rows"):
        G.fit_predict(src, np.arange(8), np.zeros((8, 3)), np.array([10]))


def test_training_is_kept_only_when_it_beats_the_search_beyond_the_inner_split_noise():
    rng = np.random.default_rng(0)
    search = 1.0 + rng.normal(0, 0.3, 30)  # per inner image
    noise = rng.normal(0, 0.05, 30)
    lucky = search - 0.005 + (noise - noise.mean())  # better on average, within the inner images' noise
    assert (lucky - search).mean() < 0 and not G._clearly_better(lucky, search)
    assert G._clearly_better(search - 0.1 + rng.normal(0, 0.05, 30), search)
    assert not G._clearly_better(search + 0.1, search)
