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

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None, loo_out=None):
        folds = None
        if params["cv"] == "kfold":
            folds = [(prepared[f"kfold{i}.rows"], prepared[f"kfold{i}.U"], prepared[f"kfold{i}.s"],
                      prepared[f"kfold{i}.P"]) for i in range(int(prepared["n_folds"]))]
        pred, chosen = ridge.fit_predict(prepared["U"], prepared["s"], prepared["P"], Y_fit, params["alphas"],
                                         params["cv"], folds, xp, rows=rows, loo_out=loo_out)
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

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None, loo_out=None):
        pred, _ = ridge.fit_predict(prepared["U"], prepared["s"], prepared["P"], Y_fit, [0.0], "gcv", None, xp,
                                    rows=rows, loo_out=loo_out)
        return pred, {}


def loo_predictions(U: np.ndarray, s: np.ndarray, Y: np.ndarray, alpha: np.ndarray,
                    block_bytes: int = 64 * 2**20) -> np.ndarray:
    """Exact leave-one-out predictions of ridge with an unpenalised intercept, per target.

    With the centred design ``X = U diag(s) V'`` and target ``j``'s ``alpha_j``, the prediction
    of image ``i`` by the model fitted without it (see :func:`.ridge.loo_block`). Fit jobs get
    these from their fit's own ``U'Y`` (``ridge.fit_predict(..., loo_out=)``); this standalone
    form computes ``U'Y`` itself, block of targets by block. A target whose ``H_ii`` is 1 (an
    image the fit interpolates) gets NaN there.
    """
    U = np.asarray(U, dtype=np.float32)
    n = U.shape[0]
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (Y.shape[1],))
    out = np.empty(Y.shape, dtype=np.float32)
    block = max(1, block_bytes // (4 * n))
    inverses: dict = {}
    for c0 in range(0, Y.shape[1], block):
        Yb = np.asarray(Y[:, c0:c0 + block], dtype=np.float32)
        mean = Yb.mean(axis=0, dtype=np.float64).astype(np.float32)
        ridge.loo_block(U, s, U.T @ (Yb - mean), mean, Yb, alpha[c0:c0 + block], out[:, c0:c0 + block], inverses)
    return out
