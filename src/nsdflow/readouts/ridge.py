"""Ridge regression with one regularisation per target, chosen in the SVD basis.

With ``X = U diag(s) V'`` (X centred, an unpenalised intercept), every alpha's fit is a rescaling
of ``U'Y``: the cost of a whole alpha grid for all targets is one product ``U'Y`` plus
O(alphas x k x targets). Two criteria pick each target's alpha:

* ``gcv``: generalised cross-validation, ``RSS / (n (1 - df/n)^2)``, with the residual sum of
  squares read off ``U'Y`` without forming any residual matrix (the fast default);
* ``loo``: exact leave-one-out error, ``sum_i (e_i / (1 - h_ii))^2``, as scikit-learn's
  ``RidgeCV(alpha_per_target=True)`` computes it (one (n x targets) residual per alpha).

Functions are pure and take float32 arrays; :class:`RidgeCV` wraps them as an sklearn-style
estimator. The decomposition is separated from the fit so that one SVD per subject and feature
set serves every region job: a region's fit is exactly the column slice of the whole fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 7, 9))


@dataclass
class Decomposition:
    """Thin SVD of a centred design: ``X = U diag(s) Vt``."""

    U: np.ndarray  # (n, k)
    s: np.ndarray  # (k,)
    Vt: np.ndarray  # (k, p)

    @property
    def n(self) -> int:
        return self.U.shape[0]


def standardize_fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and scales of ``X`` (scale 1 for constant columns)."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    scale[scale < 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0)))] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def decompose(X: np.ndarray) -> Decomposition:
    """Thin SVD of a centred design (float32), dropping numerically null directions."""
    U, s, Vt = np.linalg.svd(np.asarray(X, dtype=np.float32), full_matrices=False)
    keep = s > s.max(initial=0.0) * max(X.shape) * np.finfo(np.float32).eps
    return Decomposition(U[:, keep], s[keep], Vt[keep])


def _spans_centred_space(dec: Decomposition) -> bool:
    """True when U spans every centred direction (k = n - 1: more features than images).

    The part of Y outside U's span is then exactly zero, and computing it as ``Y - U U'Y``
    would only add float32 rounding that swamps the tiny residuals of small alphas.
    """
    return dec.U.shape[1] >= dec.n - 1


def gcv_errors(dec: Decomposition, UtY: np.ndarray, y_sq: np.ndarray, alphas) -> np.ndarray:
    """GCV criterion (alphas, targets) for centred targets with squared norms ``y_sq``."""
    s2 = dec.s.astype(np.float64) ** 2
    alphas = np.asarray(alphas, dtype=np.float64)
    shrink = alphas[:, None] / (s2[None, :] + alphas[:, None])  # 1 - d, without cancellation
    UtY2 = UtY.astype(np.float64) ** 2
    # The part of Y that no alpha can fit.
    outside = np.zeros(UtY.shape[1]) if _spans_centred_space(dec) else np.maximum(y_sq - UtY2.sum(axis=0), 0.0)
    rss = outside[None, :] + (shrink**2) @ UtY2
    n = dec.n
    df = 1.0 + (1.0 - shrink).sum(axis=1)  # +1: the intercept
    return rss / (n * (1.0 - df / n)[:, None] ** 2)


def loo_errors(dec: Decomposition, Y: np.ndarray, UtY: np.ndarray, alphas) -> np.ndarray:
    """Exact leave-one-out squared error (alphas, targets), intercept included in the hat matrix.

    Residuals and ``1 - h_ii`` are built from the shrinkage ``a / (s^2 + a)`` and the part outside
    U's span, never as differences of nearly equal numbers, so small alphas stay accurate in float32.
    """
    s2 = dec.s.astype(np.float64) ** 2
    U2 = (dec.U.astype(np.float64)) ** 2
    n = dec.n
    if _spans_centred_space(dec):
        outside_resid = None
        outside_lev = np.zeros(n)
    else:
        outside_resid = Y - dec.U @ UtY
        outside_lev = np.maximum(1.0 - 1.0 / n - U2.sum(axis=1), 0.0)
    out = np.empty((len(alphas), Y.shape[1]), dtype=np.float64)
    for i, a in enumerate(alphas):
        shrink = a / (s2 + a)
        one_minus_h = outside_lev + U2 @ shrink
        resid = dec.U @ (shrink.astype(np.float32)[:, None] * UtY)
        if outside_resid is not None:
            resid += outside_resid
        resid /= one_minus_h[:, None].astype(np.float32)
        out[i] = np.einsum("ij,ij->j", resid, resid, dtype=np.float64)
    return out


def select_alphas(errors: np.ndarray, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Best alpha per target (first of ties, like scikit-learn) and its index."""
    idx = np.argmin(errors, axis=0)
    return np.asarray(alphas, dtype=np.float64)[idx], idx


def coefficients_svd_basis(dec: Decomposition, UtY: np.ndarray, alpha_per_target: np.ndarray) -> np.ndarray:
    """Coefficients in the right-singular basis (k, targets): ``diag(s/(s^2+a_t)) U'Y``."""
    s = dec.s[:, None].astype(np.float32)
    return UtY * (s / (s**2 + alpha_per_target[None, :].astype(np.float32)))


def fit_predict(
    dec: Decomposition,
    Y: np.ndarray,
    P: np.ndarray,
    alphas=DEFAULT_ALPHAS,
    cv: str = "gcv",
) -> tuple[np.ndarray, np.ndarray]:
    """Choose each target's alpha on (U, s, Y) and predict new rows.

    Parameters
    ----------
    dec : Decomposition
        SVD of the centred, standardised training design.
    Y : (n, t) float32
        Training targets (not centred: centring is done here).
    P : (m, k) float32
        New rows projected on the right-singular vectors: ``X_new_std @ Vt.T``.
    alphas : sequence of float
    cv : {"gcv", "loo"}

    Returns
    -------
    predictions : (m, t) float32
    best_alphas : (t,) float64
    """
    Y = np.asarray(Y, dtype=np.float32)
    y_mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
    Yc = Y - y_mean
    UtY = dec.U.T @ Yc
    if cv == "gcv":
        errors = gcv_errors(dec, UtY, np.einsum("ij,ij->j", Yc, Yc, dtype=np.float64), alphas)
    elif cv == "loo":
        errors = loo_errors(dec, Yc, UtY, alphas)
    else:
        raise ValueError(f"unknown ridge cv {cv!r}: use gcv or loo")
    best, _ = select_alphas(errors, alphas)
    B = coefficients_svd_basis(dec, UtY, best)
    return (P @ B + y_mean).astype(np.float32), best


class RidgeCV:
    """Ridge with one alpha per target chosen by ``gcv`` or ``loo``; sklearn-style.

    Features are centred (not scaled) internally and the intercept is unpenalised, as in
    ``sklearn.linear_model.RidgeCV(alphas, alpha_per_target=True, fit_intercept=True)``.
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, cv: str = "gcv"):
        self.alphas = alphas
        self.cv = cv

    def fit(self, X, Y):
        X = np.asarray(X, dtype=np.float32)
        Y = np.asarray(Y, dtype=np.float32)
        squeeze = Y.ndim == 1
        Y = Y[:, None] if squeeze else Y
        self.x_mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        dec = decompose(X - self.x_mean_)
        y_mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
        # Predicting the training rows' projection gives coefficients via Vt.
        _, self.alpha_ = fit_predict(dec, Y, np.zeros((0, dec.s.size), np.float32), self.alphas, self.cv)
        UtY = dec.U.T @ (Y - y_mean)
        self.coef_ = (dec.Vt.T @ coefficients_svd_basis(dec, UtY, self.alpha_)).T  # (t, p)
        self.intercept_ = y_mean - self.coef_ @ self.x_mean_
        if squeeze:
            self.coef_, self.intercept_, self.alpha_ = self.coef_[0], self.intercept_[0], self.alpha_[0]
        return self

    def predict(self, X):
        return np.asarray(X, dtype=np.float32) @ self.coef_.T + self.intercept_
