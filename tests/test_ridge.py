"""Ridge pinned to references: scikit-learn's RidgeCV (loo) and Ridge + KFold (kfold), a direct
hat-matrix GCV and LOO, column slicing, the three decompositions and the torch backend (CPU)."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.model_selection import KFold

from nsdflow.io import open_npz, save_npz
from nsdflow.readouts.backend import get_backend, resolve_backend
from nsdflow.readouts.designs import build_design
from nsdflow.readouts.registry import get_readout
from nsdflow.readouts.ridge import (
    RidgeCV,
    decompose,
    fit_predict,
    gcv_errors,
    loo_errors,
    loo_errors_screened,
    loo_inverse_one_minus_h,
    loo_weighted_grams,
    standardize_fit,
)

ALPHAS = np.logspace(-2, 5, 15)


def _data(n=200, p=40, t=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32) * rng.uniform(0.5, 3, p).astype(np.float32) + 2
    W = rng.normal(size=(p, t)) * (rng.random((p, t)) < 0.3)
    noise = rng.normal(size=(n, t)) * np.linspace(0.2, 20, t)  # a wide range of best alphas
    Y = (X @ W + noise + 5).astype(np.float32)
    return X, Y, rng.normal(size=(25, p)).astype(np.float32) + 2


# (n, p): images outnumber features (eig), about as many (svd), fewer (gram)
@pytest.mark.parametrize("shape", [(200, 40, 30), (100, 70, 12), (60, 150, 12)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_loo_equals_sklearn(shape, backend):
    X, Y, Xt = _data(*shape)
    ours = RidgeCV(ALPHAS, cv="loo", backend=backend).fit(X, Y)
    assert ours.method_ == {200: "eig", 100: "svd", 60: "gram"}[shape[0]]
    ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_array_equal(ours.alpha_, ref.alpha_)
    pred, ref_pred = ours.predict(Xt), ref.predict(Xt.astype(np.float64))
    assert np.abs(pred - ref_pred).max() <= 1e-4 * np.abs(ref_pred).max()


@pytest.mark.parametrize("method", ["svd", "eig", "gram"])
def test_every_decomposition_gives_the_same_fit(method):
    X, Y, Xt = _data(120, 30, 8)
    ref = RidgeCV(ALPHAS, cv="gcv", method="svd").fit(X, Y)
    ours = RidgeCV(ALPHAS, cv="gcv", method=method).fit(X, Y)
    assert ours.method_ == method
    np.testing.assert_array_equal(ours.alpha_, ref.alpha_)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=1e-4, atol=1e-4 * np.abs(ref.predict(Xt)).max())
    Xc = X - X.mean(0)
    dec = decompose(Xc, method)
    np.testing.assert_allclose((dec.U * dec.s) @ dec.V.T, Xc, atol=2e-4 * np.abs(Xc).max())
    np.testing.assert_allclose(dec.U.T @ dec.U, np.eye(dec.s.size), atol=1e-4)


def test_screened_loo_picks_the_exact_alphas():
    """The bound-and-check LOO (used for blocks of many targets) chooses what the exact one does."""
    X, Y, _ = _data(300, 20, 120, seed=4)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    dec = decompose(Xc)
    UtY = dec.U.T @ Yc
    alphas = np.logspace(-1, 5, 10)
    exact = loo_errors(dec.U, dec.s, UtY, Yc, alphas)
    inv_d = loo_inverse_one_minus_h(dec.U, dec.s, alphas)
    screened = loo_errors_screened(dec.U, dec.s, UtY, Yc, alphas, inv_d, loo_weighted_grams(dec.U, inv_d))
    np.testing.assert_array_equal(screened.argmin(0), exact.argmin(0))
    winners = exact.argmin(0)
    np.testing.assert_allclose(screened[winners, np.arange(Y.shape[1])], exact[winners, np.arange(Y.shape[1])],
                               rtol=1e-3)
    # and through fit_predict with blocks wide enough to screen: sklearn's choices
    ref = SkRidgeCV(alphas=alphas, alpha_per_target=True).fit(X.astype(np.float64), Y.astype(np.float64))
    _, chosen = fit_predict(dec.U, dec.s, dec.V, Y, alphas, "loo")
    np.testing.assert_array_equal(chosen, ref.alpha_)


def test_criteria_equal_direct_hat_matrix():
    X, Y, _ = _data(80, 10, 5)
    Xc = (X - X.mean(0)).astype(np.float64)
    Yc = (Y - Y.mean(0)).astype(np.float64)
    dec = decompose(Xc.astype(np.float32))
    UtY = dec.U.T @ Yc.astype(np.float32)
    gcv = gcv_errors(dec.s, UtY, (Yc**2).sum(0), ALPHAS, len(X))
    loo = loo_errors(dec.U, dec.s, UtY, Yc.astype(np.float32), ALPHAS)
    n = len(X)
    for i, a in enumerate(ALPHAS):
        H = np.ones((n, n)) / n + Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(Xc.shape[1]), Xc.T)
        resid = Yc - H @ Yc + 0.0
        expected_gcv = (resid**2).sum(0) / (n * (1 - np.trace(H) / n) ** 2)
        expected_loo = ((resid / (1 - np.diag(H))[:, None]) ** 2).sum(0)
        np.testing.assert_allclose(gcv[i], expected_gcv, rtol=2e-4)
        np.testing.assert_allclose(loo[i], expected_loo, rtol=2e-4)


def test_kfold_equals_sklearn_ridge_on_kfold():
    X, Y, Xt = _data(90, 12, 6, seed=2)
    alphas = np.logspace(-1, 4, 8)
    ours = RidgeCV(alphas, cv="kfold", n_folds=4).fit(X, Y)
    errors = np.zeros((len(alphas), Y.shape[1]))
    for i, a in enumerate(alphas):
        for train, test in KFold(4).split(X):
            model = Ridge(alpha=a).fit(X[train].astype(np.float64), Y[train].astype(np.float64))
            errors[i] += ((model.predict(X[test].astype(np.float64)) - Y[test]) ** 2).sum(0)
    expected = alphas[errors.argmin(0)]
    np.testing.assert_array_equal(ours.alpha_, expected)
    ref = np.column_stack([Ridge(alpha=a).fit(X.astype(np.float64), Y[:, j].astype(np.float64)).predict(
        Xt.astype(np.float64)) for j, a in enumerate(expected)])
    np.testing.assert_allclose(ours.predict(Xt), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("cv", ["gcv", "loo"])
def test_torch_backend_matches_numpy(cv):
    X, Y, Xt = _data(150, 25, 40, seed=3)
    a = RidgeCV(ALPHAS, cv=cv, backend="numpy").fit(X, Y)
    b = RidgeCV(ALPHAS, cv=cv, backend="torch").fit(X, Y)
    assert (a.alpha_ == b.alpha_).mean() >= 0.95  # float32 rounding may flip a near-tie
    same = a.alpha_ == b.alpha_
    np.testing.assert_allclose(a.predict(Xt)[:, same], b.predict(Xt)[:, same], rtol=1e-4, atol=1e-4)


def test_backend_auto_resolves_without_a_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_backend("auto") == "numpy"
    with pytest.raises(ValueError, match="unknown readouts backend 'cupy'"):
        resolve_backend("cupy")
    assert get_backend("torch").device.type in ("cpu", "cuda")


def test_region_fit_is_a_column_slice_of_the_whole_fit(tmp_path):
    X, Y, Xt = _data()
    r = get_readout("ridge")
    mean, scale = standardize_fit(X)
    save_npz(tmp_path / "d.npz", **build_design("decomposition", {}, (X - mean) / scale, (Xt - mean) / scale))
    prepared = open_npz(tmp_path / "d.npz", mmap_min_bytes=0)  # as fit jobs read it: memory-mapped
    assert isinstance(prepared["U"], np.memmap)
    params = r.normalize({"alphas": ALPHAS.tolist()})
    whole, info = r.fit_predict(prepared, Y, params)
    cols = np.array([3, 7, 8, 20])
    part, info_part = r.fit_predict(prepared, Y[:, cols], params)
    np.testing.assert_allclose(part, whole[:, cols], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(info_part["alpha"], info["alpha"][cols])


def test_recovers_known_weights():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 8)).astype(np.float32)
    W = rng.normal(size=(8, 3)).astype(np.float32)
    Y = X @ W + 0.01 * rng.normal(size=(500, 3)).astype(np.float32) + 1.5
    m = RidgeCV(ALPHAS, cv="gcv").fit(X, Y)
    np.testing.assert_allclose(m.coef_.T, W, atol=0.01)
    np.testing.assert_allclose(m.intercept_, 1.5, atol=0.01)


def test_standardize_handles_constant_columns():
    X = np.ones((10, 3), np.float32)
    X[:, 1] = np.arange(10)
    mean, scale = standardize_fit(X)
    assert scale[0] == 1.0 and scale[2] == 1.0 and scale[1] > 0
    dec = decompose((X - mean) / scale)
    assert dec.s.size == 1  # the constant columns carry nothing
    pred, alphas = fit_predict(dec.U, dec.s, np.zeros((2, 1), np.float32), np.arange(10, dtype=np.float32)[:, None],
                               ALPHAS)
    assert np.isfinite(pred).all() and alphas.shape == (1,)


def test_unknown_cv_is_an_error():
    X, Y, Xt = _data(30, 4, 2)
    with pytest.raises(ValueError, match="unknown ridge cv 'kfold5'"):
        RidgeCV(ALPHAS, cv="kfold5").fit(X, Y)


def test_gcv_is_unmoved_by_a_large_offset_of_the_targets():
    """gcv reads targets uncentred; targets far from zero are recomputed from centred columns."""
    X, Y, Xt = _data(150, 20, 10, seed=5)
    Y = Y - Y.mean(0)
    dec = decompose(X - X.mean(0))
    P = (Xt - X.mean(0)) @ dec.V
    near, a_near = fit_predict(dec.U, dec.s, P, Y, ALPHAS, "gcv")
    far, a_far = fit_predict(dec.U, dec.s, P, Y + 1e4, ALPHAS, "gcv")
    np.testing.assert_array_equal(a_far, a_near)
    np.testing.assert_allclose(far - 1e4, near, atol=2e-3 * np.abs(near).max())


@pytest.mark.parametrize("cv", ["gcv", "loo"])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_fitting_on_rows_of_the_targets_equals_fitting_on_their_copy(cv, offset):
    """Fit jobs pass a fold's rows instead of copying them (gcv reads them in place)."""
    X, Y, Xt = _data(120, 15, 12, seed=6)
    rows = np.sort(np.random.default_rng(0).choice(120, 90, replace=False))
    Y = Y + offset
    dec = decompose(X[rows] - X[rows].mean(0))
    P = (Xt - X[rows].mean(0)) @ dec.V
    copied, a_copied = fit_predict(dec.U, dec.s, P, Y[rows], ALPHAS, cv)
    in_place, a_in_place = fit_predict(dec.U, dec.s, P, Y, ALPHAS, cv, rows=rows)
    np.testing.assert_array_equal(a_in_place, a_copied)
    np.testing.assert_allclose(in_place, copied, rtol=1e-5, atol=1e-4 * np.abs(copied).max())


@pytest.mark.parametrize("threads", [1, 2])
def test_sums_of_squares_by_strips_equal_the_whole_block(monkeypatch, threads):
    """gcv sums a block's squares by column strips over BLAS's threads: the same sums, in order."""
    from threadpoolctl import threadpool_limits

    from nsdflow.readouts import ridge

    Y = np.random.default_rng(8).normal(size=(50, 41)).astype(np.float32) * np.arange(1, 42, dtype=np.float32)
    block = Y[:, 3:40]  # a column block of a row-major matrix, as gcv reads it
    monkeypatch.setattr(ridge, "SQ_STRIP", 8)
    with threadpool_limits(threads, user_api="blas"):
        sums = ridge._col_sq_sums(block, ridge._NP)
    np.testing.assert_allclose(sums, (block.astype(np.float64) ** 2).sum(0), rtol=1e-6)


def test_gcv_keeps_constant_and_far_from_zero_targets_exact():
    """A constant target is predicted as its constant, and an offset of 1e5 shifts RidgeCV's intercept
    and predictions by 1e5 to float32 resolution: the means of targets far from zero are float64."""
    X, Y, Xt = _data(400, 20, 6, seed=9)
    Y[:, 0] = 7.3
    pred, _ = fit_predict(*_decomposition_and_rows(X, Xt), Y, ALPHAS, "gcv")
    assert (pred[:, 0] == np.float32(7.3)).all()
    near = RidgeCV(ALPHAS, cv="gcv").fit(X, Y[:, 1:])
    far = RidgeCV(ALPHAS, cv="gcv").fit(X, Y[:, 1:] + 1e5)
    np.testing.assert_array_equal(far.alpha_, near.alpha_)
    ulp = np.spacing(np.float32(1e5))
    np.testing.assert_allclose(far.intercept_ - 1e5, near.intercept_, atol=2 * ulp)
    np.testing.assert_allclose(far.predict(Xt) - 1e5, near.predict(Xt), atol=3 * ulp)


def _decomposition_and_rows(X, Xt):
    """``U``, ``s`` of the centred X and ``Xt`` projected, as a design stores them."""
    mean = X.mean(0)
    dec = decompose(X - mean)
    return dec.U, dec.s, (Xt - mean) @ dec.V
