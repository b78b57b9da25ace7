"""The linear readouts on a cached decomposition: ``ridge`` and the devkit's ``pca_linear``."""

from __future__ import annotations

import numpy as np

from . import ridge
from .params import Param, Readout, alphas, choice, number


class RidgeReadout(Readout):
    """Ridge regression, one alpha per vertex chosen by ``gcv``, ``loo`` or ``kfold`` (see :mod:`.ridge`)."""

    name = "ridge"
    design = "decomposition"
    default_standardize = True
    default_fit_jobs = "region"
    separable = True
    params = {
        "alphas": Param(list(ridge.DEFAULT_ALPHAS), "the grid each vertex's alpha is chosen from", alphas),
        "cv": Param("gcv", "how alphas are chosen: gcv (generalised cross-validation, fast), loo (exact "
                    "leave-one-out, as scikit-learn's RidgeCV), kfold (contiguous folds)", choice(*ridge.CRITERIA)),
        "n_folds": Param(5, "folds of cv kfold", number(2, integer=True)),
        "decomposition": Param("auto", "auto (by shape), svd, eig (of X'X) or gram (of XX')",
                               choice(*ridge.METHODS)),
    }

    def design_params(self, params):
        return {"decomposition": params["decomposition"],
                "n_folds": params["n_folds"] if params["cv"] == "kfold" else None}

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        folds = None
        if params["cv"] == "kfold":
            folds = [(prepared[f"kfold{i}.rows"], prepared[f"kfold{i}.U"], prepared[f"kfold{i}.s"],
                      prepared[f"kfold{i}.P"]) for i in range(int(prepared["n_folds"]))]
        pred, chosen = ridge.fit_predict(prepared["U"], prepared["s"], prepared["P"], Y_fit, params["alphas"],
                                         params["cv"], folds, xp, rows=rows)
        return pred, {"alpha": chosen}


class PcaLinearReadout(Readout):
    """The challenge devkit's baseline: ordinary least squares on a PCA feature set.

    The devkit fits ``IncrementalPCA(n_components=100, batch_size=300)`` on the training
    images' flattened AlexNet ``features.2`` (not standardised), then ``LinearRegression``;
    here the PCA is the feature set's (``pca`` of the model) and the least squares come from
    the shared decomposition (``alpha = 0``: the minimum-norm solution if rank-deficient).
    """

    name = "pca_linear"
    design = "decomposition"
    default_standardize = False  # the devkit standardises nothing
    # No per-vertex hyperparameter: a region's fit is a least-squares solve in the PCA basis (about
    # a millisecond), so per-region jobs would be all process start-up (~0.35 s each).
    default_fit_jobs = "hemisphere"
    separable = True
    params: dict[str, Param] = {}

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        pred, _ = ridge.fit_predict(prepared["U"], prepared["s"], prepared["P"], Y_fit, [0.0], "gcv", None, xp,
                                    rows=rows)
        return pred, {}


def loo_predictions(U: np.ndarray, s: np.ndarray, Y: np.ndarray, alpha: np.ndarray,
                    block_bytes: int = 64 * 2**20) -> np.ndarray:
    """Exact leave-one-out predictions of ridge with an unpenalised intercept, per target.

    With the centred design ``X = U diag(s) V'`` and target ``j``'s ``alpha_j``, the hat matrix is
    ``H = 11'/n + U diag(s^2 / (s^2 + alpha_j)) U'`` and the prediction of image ``i`` by the model
    fitted without it is ``(yhat_i - H_ii y_i) / (1 - H_ii)``: every training image's prediction
    from a model that never saw it, at the cost of one more fit (three products per block of
    targets). A target whose ``H_ii`` is 1 (an image the fit interpolates) gets NaN there.
    """
    U = np.asarray(U, dtype=np.float32)
    n = U.shape[0]
    s2 = np.asarray(s, dtype=np.float64) ** 2
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (Y.shape[1],))
    U2 = U * U
    out = np.empty(Y.shape, dtype=np.float32)
    block = max(1, block_bytes // (4 * n))
    for c0 in range(0, Y.shape[1], block):
        Yb = np.asarray(Y[:, c0:c0 + block], dtype=np.float32)
        mean = Yb.mean(axis=0, dtype=np.float64).astype(np.float32)
        shrink = (s2[:, None] / (s2[:, None] + alpha[None, c0:c0 + block])).astype(np.float32)  # (k, t)
        fitted = U @ (shrink * (U.T @ (Yb - mean))) + mean
        # H_ii depends on the target only through its alpha, one of a few: a product per distinct alpha
        # rather than per target (a third of the work of a region's fit job)
        distinct, which = np.unique(alpha[c0:c0 + block], return_inverse=True)
        h = (U2 @ (s2[:, None] / (s2[:, None] + distinct[None, :])).astype(np.float32))[:, which.ravel()]
        h += np.float32(1.0 / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = (fitted - h * Yb) / (1.0 - h)
        out[:, c0:c0 + block] = np.where(1.0 - h > 1e-6, loo, np.nan)
    return out
