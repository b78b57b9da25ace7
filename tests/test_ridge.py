"""Ridge pinned to references: scikit-learn's RidgeCV (loo), a direct hat-matrix GCV, column slicing."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV as SkRidgeCV

from nsdflow.readouts import get_readout
from nsdflow.readouts.ridge import RidgeCV, decompose, fit_predict, gcv_errors, loo_errors, standardize_fit

ALPHAS = np.logspace(-2, 5, 15)


def _data(n=200, p=40, t=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32) * rng.uniform(0.5, 3, p).astype(np.float32) + 2
    W = rng.normal(size=(p, t)) * (rng.random((p, t)) < 0.3)
    noise = rng.normal(size=(n, t)) * np.linspace(0.2, 20, t)  # a wide range of best alphas
    Y = (X @ W + noise + 5).astype(np.float32)
    return X, Y, rng.normal(size=(25, p)).astype(np.float32) + 2


@pytest.mark.parametrize("shape", [(200, 40, 30), (60, 150, 12)])  # more images than features, and fewer
def test_loo_equals_sklearn(shape):
    X, Y, Xt = _data(*shape)
    ours = RidgeCV(ALPHAS, cv="loo").fit(X, Y)
    ref = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_array_equal(ours.alpha_, ref.alpha_)
    pred, ref_pred = ours.predict(Xt), ref.predict(Xt.astype(np.float64))
    assert np.abs(pred - ref_pred).max() <= 1e-4 * np.abs(ref_pred).max()


def test_criteria_equal_direct_hat_matrix():
    X, Y, _ = _data(80, 10, 5)
    Xc = (X - X.mean(0)).astype(np.float64)
    Yc = (Y - Y.mean(0)).astype(np.float64)
    dec = decompose(Xc.astype(np.float32))
    UtY = dec.U.T @ Yc.astype(np.float32)
    gcv = gcv_errors(dec, UtY, (Yc**2).sum(0), ALPHAS)
    loo = loo_errors(dec, Yc.astype(np.float32), UtY, ALPHAS)
    n = len(X)
    for i, a in enumerate(ALPHAS):
        H = np.ones((n, n)) / n + Xc @ np.linalg.solve(Xc.T @ Xc + a * np.eye(Xc.shape[1]), Xc.T)
        resid = Yc - H @ Yc + 0.0
        expected_gcv = (resid**2).sum(0) / (n * (1 - np.trace(H) / n) ** 2)
        expected_loo = ((resid / (1 - np.diag(H))[:, None]) ** 2).sum(0)
        np.testing.assert_allclose(gcv[i], expected_gcv, rtol=2e-4)
        np.testing.assert_allclose(loo[i], expected_loo, rtol=2e-4)


def test_region_fit_is_a_column_slice_of_the_whole_fit():
    X, Y, Xt = _data()
    r = get_readout("ridge")
    prepared = r.prepare(X, Xt, {})
    whole, info = r.fit_predict(prepared, Y, {"alphas": ALPHAS})
    cols = np.array([3, 7, 8, 20])
    part, info_part = r.fit_predict(prepared, Y[:, cols], {"alphas": ALPHAS})
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
    pred, alphas = fit_predict(decompose((X - mean) / scale), np.arange(10, dtype=np.float32)[:, None],
                               np.zeros((2, 1), np.float32), ALPHAS)
    assert np.isfinite(pred).all() and alphas.shape == (1,)


def test_unknown_cv_is_an_error():
    X, Y, Xt = _data(30, 4, 2)
    with pytest.raises(ValueError, match="unknown ridge cv 'kfold5'"):
        RidgeCV(ALPHAS, cv="kfold5").fit(X, Y)
