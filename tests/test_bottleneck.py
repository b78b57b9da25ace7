"""The bottleneck network (FBNET): its pieces against hand-worked numbers, recovery of a planted
map, no targets at inference, pretraining then fine-tuning, and resuming a killed fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nsdflow.readouts import bottleneck_net as bn
from nsdflow.readouts import training
from nsdflow.readouts.bottleneck import BottleneckReadout

TINY = {"hidden": 64, "n_components": 4, "batch_size": 32, "lr": 3e-3, "epochs": 8, "pretrain_epochs": 6}


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests of seconds, not of threads


def _planted(n=400, d=20, v_lh=30, v_rh=25, rank=3, noise=0.3, seed=0, B=None):
    """X (n, d) and responses that are a rank-``rank`` map of X plus noise, in both hemispheres."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    B = rng.normal(size=(d, rank)) if B is None else B
    Y_lh = X @ B @ rng.normal(size=(rank, v_lh)) + noise * rng.normal(size=(n, v_lh))
    Y_rh = X @ B @ rng.normal(size=(rank, v_rh)) + noise * rng.normal(size=(n, v_rh))
    return X, Y_lh.astype(np.float32), Y_rh.astype(np.float32)


def _mean_r(pred, true):
    pred, true = pred - pred.mean(0), true - true.mean(0)
    return float(((pred * true).sum(0) / np.sqrt((pred * pred).sum(0) * (true * true).sum(0))).mean())


# ----------------------------------------------------------------------------- pieces


def test_lion_matches_a_hand_computed_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = bn.Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    p.grad = torch.tensor([0.5, -3.0])
    opt.step()
    # m = 0: sign(0.1 g) = (1, -1); p - 0.1 (sign + 0.01 p); m = 0.01 g = (0.005, -0.03)
    np.testing.assert_allclose(p.detach().numpy(), [0.899, -1.898], rtol=0, atol=1e-6)
    p.grad = torch.tensor([-0.04, 0.2])
    opt.step()
    # sign(0.9 m + 0.1 g) = sign(0.0005, -0.007) = (1, -1): the momentum outvotes this gradient
    np.testing.assert_allclose(p.detach().numpy(), [0.899 - 0.1 * (1 + 0.00899), -1.898 + 0.1 * (1 + 0.01898)],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(opt.state[p]["exp_avg"].numpy(), [0.99 * 0.005 - 0.0004, -0.99 * 0.03 + 0.002],
                               rtol=0, atol=1e-7)


def test_racing_loss_on_a_hand_worked_example():
    def t(*rows):
        return torch.tensor(rows, dtype=torch.float32)

    # left: cosines 1 and 1/sqrt(2) (mean 0.8536); right: -1 and 1 (mean 0, the lagging side)
    pred_lh, y_lh = t([1, 0], [1, 1]), t([1, 0], [0, 1])
    pred_rh, y_rh = t([0, 2], [3, 4]), t([0, -1], [3, 4])
    cos_l = (1 + 1 / math.sqrt(2)) / 2
    expected = -(0.0 + (cos_l + 0.0) / 2)
    assert bn.racing_loss(pred_lh, y_lh, pred_rh, y_rh).item() == pytest.approx(expected, abs=1e-6)
    # per image, so a prediction's scale does not matter
    assert bn.racing_loss(3 * pred_lh, y_lh, 0.5 * pred_rh, y_rh).item() == pytest.approx(expected, abs=1e-6)
    assert bn.racing_loss(y_lh, y_lh, y_rh, y_rh).item() == pytest.approx(-2.0, abs=1e-6)


def test_leak_input_by_hand():
    h, p_noise, p_leak = torch.tensor([1.0, 2.0]), torch.tensor([10.0, -10.0]), torch.tensor([5.0, 0.0])
    train = bn.leak_input(h, p_noise, p_leak, 0.02, 0.002)
    infer = bn.leak_input(h, p_noise, None, 0.02, 0.002)
    np.testing.assert_allclose(train.numpy(), [(1 + 0.1 + 0.02) / 1.022, (2 - 0.02) / 1.022], rtol=1e-6)
    np.testing.assert_allclose(infer.numpy(), [(1 - 0.22) / 1.022, (2 + 0.22) / 1.022], rtol=1e-6)


@pytest.mark.parametrize("n,v", [(60, 12), (15, 40)])  # the covariance and the Gram route
def test_target_pca_matches_an_svd(tmp_path, n, v):
    rng = np.random.default_rng(0)
    Y = ((rng.normal(size=(n, 6)) * np.linspace(3, 0.5, 6)) @ rng.normal(size=(6, v))
         + 0.1 * rng.normal(size=(n, v)) + 5).astype(np.float32)
    pca = bn.TargetPCA.fit(Y, 4)
    _, s, vt = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components @ vt[:4].T), np.eye(4), atol=1e-4)
    np.testing.assert_allclose(pca.variance, s[:4] ** 2 / (n - 1), rtol=1e-4)
    Z = pca.transform(Y)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), pca.variance, rtol=1e-4)
    big = np.abs(pca.components).argmax(axis=1)
    assert (pca.components[np.arange(4), big] > 0).all()
    np.testing.assert_allclose(pca.inverse(Z), (Y - Y.mean(0)) @ vt[:4].T @ vt[:4] + Y.mean(0), atol=1e-3)
    pca.save(tmp_path / "pca.npz")
    again = bn.TargetPCA.load(tmp_path / "pca.npz")
    np.testing.assert_array_equal(again.components, pca.components)
    with pytest.raises(ValueError, match="n_components"):
        bn.TargetPCA.fit(Y, min(n, v))


def test_params_are_checked():
    assert BottleneckReadout().normalize({})["hidden"] == 6000
    with pytest.raises(ValueError, match="racng: not a parameter"):
        BottleneckReadout().normalize({"racng": False})
    with pytest.raises(ValueError, match="dropout"):
        BottleneckReadout().normalize({"dropout": 1.0})
    X, Y_lh, Y_rh = _planted(n=60)
    with pytest.raises(ValueError, match="pretrain is true: pass init"):
        bn.fit(bn.SubjectData(X, Y_lh, Y_rh), TINY)


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("racing", [True, False])
def test_recovers_a_planted_low_rank_map(racing):
    X, Y_lh, Y_rh = _planted(n=500)
    fitted = bn.fit(bn.SubjectData(X[:400], Y_lh[:400], Y_rh[:400]),
                    {**TINY, "epochs": 20, "pretrain": False, "racing": racing})
    pred_lh, pred_rh = bn.predict(fitted, X[400:])
    assert pred_lh.shape == (100, 30) and pred_rh.shape == (100, 25)
    r = (_mean_r(pred_lh, Y_lh[400:]) + _mean_r(pred_rh, Y_rh[400:])) / 2
    shuffled = np.random.default_rng(1).permutation(100)
    r_shuffled = (_mean_r(pred_lh, Y_lh[400:][shuffled]) + _mean_r(pred_rh, Y_rh[400:][shuffled])) / 2
    assert r > 0.9 and r - abs(r_shuffled) > 0.6, (r, r_shuffled)


def test_targets_enter_training_only():
    """In training the targets move the output, by the shared projection times a / (1 + a + b);
    at inference they cannot be passed, and the noise is subtracted as (a + b) / (1 + a + b)."""
    params = BottleneckReadout().normalize({**TINY, "dropout": 0.0})
    a, b = params["leak_a"], params["leak_b"]
    model = bn.build_model(5, params)
    g = torch.Generator().manual_seed(0)
    x, noise, leak = torch.randn(6, 5, generator=g), torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    permuted = leak[torch.randperm(6, generator=g)]
    model.train()
    lh1, rh1 = model(x, noise, leak)
    lh2, rh2 = model(x, noise, permuted)
    assert not torch.allclose(lh1, lh2) and not torch.allclose(rh1, rh2)
    expected = (leak - permuted) @ (model.head_lh.weight @ model.leak_projection.weight).T * a / (1 + a + b)
    torch.testing.assert_close(lh1 - lh2, expected, atol=1e-5, rtol=1e-4)
    model.eval()
    with pytest.raises(ValueError, match="never at inference"):
        model(x, noise, leak)
    h = model.widen(x)
    h = h + model.prelu(model.residual(h))
    torch.testing.assert_close(model(x, noise)[0],
                               model.head_lh((h - (a + b) * model.leak_projection(noise)) / (1 + a + b)))
    no_leak = bn.build_model(5, {**params, "leak": False})
    assert no_leak.leak_projection is None
    torch.testing.assert_close(no_leak(x, noise)[0], no_leak(x)[0])


def test_fits_are_deterministic_and_the_inference_noise_is_a_switch():
    X, Y_lh, Y_rh = _planted(n=200)
    data = bn.SubjectData(X[:150], Y_lh[:150], Y_rh[:150])
    params = {**TINY, "epochs": 3, "pretrain": False}
    one = bn.predict(bn.fit(data, params), X[150:])
    two = bn.predict(bn.fit(data, params), X[150:])
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    fitted = bn.fit(data, {**params, "inference_noise": "mean"})
    mean_mode = bn.predict(fitted, X[150:])
    assert not np.array_equal(one[0], mean_mode[0])
    # z = 0: each image's prediction is its own, whatever the other rows
    np.testing.assert_allclose(bn.predict(fitted, X[150:][::-1])[0][::-1], mean_mode[0], rtol=1e-5, atol=1e-5)


def test_pretraining_ignores_excluded_rows_and_fine_tuning_starts_from_it():
    B = np.random.default_rng(9).normal(size=(20, 3))
    subjects = {s: bn.SubjectData(*_planted(n=160, seed=i, B=B, v_lh=30 + i, v_rh=25 - i))
                for i, s in enumerate(["subj01", "subj02"])}
    exclude = {"subj01": np.arange(10), "subj02": np.arange(150, 160)}
    state, result = bn.pretrain(subjects, TINY, exclude=exclude)
    assert result.epochs == TINY["pretrain_epochs"] and 1 <= result.best_epoch <= result.epochs
    # garbage in the excluded rows changes nothing
    spoiled = {}
    for s, d in subjects.items():
        X, Y_lh, Y_rh = d.X.copy(), d.Y_lh.copy(), d.Y_rh.copy()
        X[exclude[s]], Y_lh[exclude[s]], Y_rh[exclude[s]] = 1e3, -1e3, 1e3
        spoiled[s] = bn.SubjectData(X, Y_lh, Y_rh)
    state2, _ = bn.pretrain(spoiled, TINY, exclude=exclude)
    for k in state:
        torch.testing.assert_close(state2[k], state[k], rtol=0, atol=0)

    data = subjects["subj01"]
    unchanged = bn.fit(data, {**TINY, "epochs": 0}, init=state)
    for k, v in unchanged.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # with 0 epochs it predicts as the pretrained network with this subject's PCAs
    pretrained = bn.build_model(20, BottleneckReadout().normalize(TINY))
    pretrained.load_state_dict(state)
    as_pretrained = bn.FittedBottleneck(pretrained.eval(), unchanged.pca_lh, unchanged.pca_rh, unchanged.params,
                                        unchanged.result)
    X_new = np.random.default_rng(5).normal(size=(7, 20)).astype(np.float32)
    np.testing.assert_array_equal(bn.predict(unchanged, X_new)[0], bn.predict(as_pretrained, X_new)[0])
    tuned = bn.fit(data, {**TINY, "epochs": 1}, init=state)
    fresh = bn.build_model(20, BottleneckReadout().normalize(TINY)).state_dict()

    def distance(a, b):
        return max(float((a[k] - b[k]).abs().max()) for k in b)

    # Lion moves a weight by at most lr (1 + wd |w|) a step: one epoch's steps bound the move from
    # the pretrained state, well below the pretraining's own move from the initialisation
    bound = math.ceil(len(data.X) * 0.95 / TINY["batch_size"]) * TINY["lr"] * 1.01
    assert 0 < distance(tuned.model.state_dict(), state) <= bound < distance(state, fresh) / 3
    with pytest.raises(ValueError, match="init: not a state"):
        bn.fit(data, {**TINY, "hidden": 32}, init=state)


def test_a_killed_fit_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    X, Y_lh, Y_rh = _planted(n=200)
    data = bn.SubjectData(X[:150], Y_lh[:150], Y_rh[:150])
    params = {**TINY, "epochs": 5, "pretrain": False}
    whole = bn.predict(bn.fit(data, params, checkpoint=tmp_path / "a.pt", key="k"), X[150:])

    save = training.save_checkpoint
    saved = []

    def save_then_die(path, state):
        save(path, state)
        saved.append(state["epoch"])
        if state["epoch"] == 3:
            raise KeyboardInterrupt  # killed right after epoch 3's checkpoint

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        bn.fit(data, params, checkpoint=tmp_path / "b.pt", key="k")
    monkeypatch.setattr(training, "save_checkpoint", save)
    fitted = bn.fit(data, params, checkpoint=tmp_path / "b.pt", key="k")
    assert saved == [1, 2, 3] and fitted.result.resumed_from == 3 and fitted.result.epochs == 5
    resumed = bn.predict(fitted, X[150:])
    np.testing.assert_array_equal(resumed[0], whole[0])
    np.testing.assert_array_equal(resumed[1], whole[1])


def test_a_fine_tune_checkpoint_is_not_resumed_onto_another_pretrained_state(tmp_path):
    X, Y_lh, Y_rh = _planted(n=150)
    data = bn.SubjectData(X, Y_lh, Y_rh)
    one = bn.build_model(20, BottleneckReadout().normalize({**TINY, "seed": 1})).state_dict()
    two = bn.build_model(20, BottleneckReadout().normalize({**TINY, "seed": 2})).state_dict()
    params = {**TINY, "epochs": 2}
    bn.fit(data, params, checkpoint=tmp_path / "ft.pt", key="subj01", init=one)
    assert bn.fit(data, params, checkpoint=tmp_path / "ft.pt", key="subj01", init=one).result.resumed_from == 2
    assert bn.fit(data, params, checkpoint=tmp_path / "ft.pt", key="subj01", init=two).result.resumed_from == 0
