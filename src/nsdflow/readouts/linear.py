"""The linear readouts on a cached decomposition: ``ridge`` and the devkit's ``pca_linear``."""

from __future__ import annotations

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
