"""Readouts: models from backbone features to vertex responses, in a registry by name.

A model's inputs are a *feature set* (:mod:`.featuresets`: layers concatenated, standardised
on the fit images, optionally reduced by PCA), cached once per subject. On it, a *design*
(:mod:`.designs`) is cached once per subject, feature set and design parameters, and shared
by every model, hemisphere and region job that needs it:

``decomposition``
    the ridge decomposition (U, s and the prediction rows projected), used by ``ridge`` and
    ``pca_linear``;
``matrix``
    the standardised inputs themselves, used by the torch readouts.

A readout then fits one region (or a whole hemisphere) from its design's arrays:

``fit_predict(prepared, Y_fit, params, xp) -> (predictions, per-target info)``

Each readout declares its parameters (:class:`Param`: default, description, check), which
the workflow validates before any job runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from . import ridge


@dataclass(frozen=True)
class Param:
    """One readout parameter: its default, what it means, and a check returning an error or None."""

    default: Any
    description: str
    check: Callable[[Any], str | None]


def _number(minimum: float | None = None, integer: bool = False, exclusive: bool = False):
    def check(v):
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            return "must be an integer" if integer else "must be a number"
        if minimum is not None and (v <= minimum if exclusive else v < minimum):
            return f"must be {'>' if exclusive else '>='} {minimum}"
        return None
    return check


def _choice(*choices):
    def check(v):
        return None if v in choices else f"must be one of {', '.join(map(str, choices))}"
    return check


def _boolean(v):
    return None if isinstance(v, bool) else "must be true or false"


def _alphas(v):
    if not isinstance(v, list) or not v or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
        return "must be a non-empty list of numbers"
    if any(a <= 0 for a in v):
        return "must all be > 0"
    return None


def _hidden(v):
    if not isinstance(v, list) or not v or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v):
        return "must be a non-empty list of positive integers (units per hidden block)"
    return None


def _fraction(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        return "must be a number between 0 and 1 (exclusive)"
    return None


class Readout(Protocol):
    name: str
    design: str  # which design kind it fits from (see .designs)
    default_standardize: bool  # standardise the feature set's columns unless the model says otherwise
    default_fit_jobs: str  # "region" or "hemisphere" jobs
    separable: bool  # a fit on several regions equals the fits of each (one alpha per target)
    params: dict[str, Param]

    def design_params(self, params: dict[str, Any]) -> dict[str, Any]: ...

    def fit_predict(self, prepared: dict[str, np.ndarray], Y_fit: np.ndarray, params: dict[str, Any],
                    xp, rows=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``rows``: the rows of ``Y_fit`` the design's fit rows are (default: all of them)."""


class _Base:
    params: dict[str, Param] = {}

    def normalize(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults filled in and every value checked; ValueError names the parameter."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = ", ".join(self.params) or "none"
            raise ValueError(f"{unknown[0]}: not a parameter of readout {self.name!r} (valid: {valid})")
        out = {}
        for key, spec in self.params.items():
            value = params.get(key, spec.default)
            problem = spec.check(value)
            if problem:
                raise ValueError(f"{key}: {problem} (got {value!r})")
            out[key] = value
        return out

    def design_params(self, params):
        return {"decomposition": "auto", "n_folds": None} if self.design == "decomposition" else {}


class RidgeReadout(_Base):
    """Ridge regression, one alpha per vertex chosen by ``gcv``, ``loo`` or ``kfold`` (see :mod:`.ridge`)."""

    name = "ridge"
    design = "decomposition"
    default_standardize = True
    default_fit_jobs = "region"
    separable = True
    params = {
        "alphas": Param(list(ridge.DEFAULT_ALPHAS), "the grid each vertex's alpha is chosen from", _alphas),
        "cv": Param("gcv", "how alphas are chosen: gcv (generalised cross-validation, fast), loo (exact "
                    "leave-one-out, as scikit-learn's RidgeCV), kfold (contiguous folds)", _choice(*ridge.CRITERIA)),
        "n_folds": Param(5, "folds of cv kfold", _number(2, integer=True)),
        "decomposition": Param("auto", "auto (by shape), svd, eig (of X'X) or gram (of XX')",
                               _choice(*ridge.METHODS)),
    }

    def design_params(self, params):
        return {"decomposition": params["decomposition"],
                "n_folds": params["n_folds"] if params["cv"] == "kfold" else None}

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        folds = None
        if params["cv"] == "kfold":
            folds = [(prepared[f"kfold{i}.rows"], prepared[f"kfold{i}.U"], prepared[f"kfold{i}.s"],
                      prepared[f"kfold{i}.P"]) for i in range(int(prepared["n_folds"]))]
        pred, alphas = ridge.fit_predict(prepared["U"], prepared["s"], prepared["P"], Y_fit, params["alphas"],
                                         params["cv"], folds, xp, rows=rows)
        return pred, {"alpha": alphas}


class PcaLinearReadout(_Base):
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


_TRAINING = {
    "batch_size": Param(64, "images per optimisation step", _number(1, integer=True)),
    "weight_decay": Param(1e-2, "AdamW weight decay", _number(0)),
    "step_size": Param(10, "StepLR: epochs between learning-rate decays", _number(1, integer=True)),
    "gamma": Param(0.75, "StepLR: learning-rate factor at each decay", _number(0, exclusive=True)),
    "seed": Param(0, "seed of the initialisation, the shuffling and (mlp) the inner split", _number(integer=True)),
    "standardize_targets": Param(True, "fit z-scored responses (per vertex, on the fit images) and map "
                                 "predictions back", _boolean),
}


class TorchLinearReadout(_Base):
    """One ``nn.Linear`` per region (the thesis's CLIP-ROI): MSE, AdamW, StepLR, fixed epochs."""

    name = "torch_linear"
    design = "matrix"
    default_standardize = True
    default_fit_jobs = "hemisphere"  # one torch import per hemisphere, one model per region inside
    separable = False
    params = {
        "lr": Param(1e-4, "AdamW learning rate", _number(0, exclusive=True)),
        "epochs": Param(30, "training epochs", _number(1, integer=True)),
        **_TRAINING,
    }

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        from .torch_models import fit_predict_torch

        Y_fit = Y_fit if rows is None else np.take(Y_fit, rows, axis=0)
        return fit_predict_torch("linear", prepared["X_fit"], Y_fit, prepared["X_pred"], params, _device(xp))


class MlpReadout(_Base):
    """An MLP per region (the thesis's CLIP-DNN): blocks of Linear, BatchNorm1d, LeakyReLU and
    optional dropout, optional residual blocks, early stopping on an inner split of the fit images."""

    name = "mlp"
    design = "matrix"
    default_standardize = True
    default_fit_jobs = "hemisphere"
    separable = False
    params = {
        "hidden": Param([512], "units of each hidden block (Linear, BatchNorm1d, LeakyReLU, dropout)", _hidden),
        "dropout": Param(0.1, "dropout after each block's activation (0: none)", _number(0)),
        "residual": Param(False, "add each block's input to its output where their widths are equal", _boolean),
        "negative_slope": Param(0.01, "LeakyReLU negative slope", _number(0)),
        "lr": Param(1e-3, "AdamW learning rate", _number(0, exclusive=True)),
        "epochs": Param(100, "maximum training epochs", _number(1, integer=True)),
        "patience": Param(10, "stop after this many epochs without a better inner-validation loss",
                          _number(1, integer=True)),
        "inner_val_fraction": Param(0.1, "fraction of the fit images held out for early stopping (never the "
                                    "validation split that scores are computed on)", _fraction),
        **_TRAINING,
    }

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        from .torch_models import fit_predict_torch

        Y_fit = Y_fit if rows is None else np.take(Y_fit, rows, axis=0)
        return fit_predict_torch("mlp", prepared["X_fit"], Y_fit, prepared["X_pred"], params, _device(xp))


def _device(xp) -> str:
    return "cuda" if xp is not None and getattr(xp, "name", "") == "torch_cuda" else "cpu"


#: The readout registry: a model's ``readout`` in the config picks its entry.
READOUTS: dict[str, Readout] = {
    "ridge": RidgeReadout(),
    "pca_linear": PcaLinearReadout(),
    "torch_linear": TorchLinearReadout(),
    "mlp": MlpReadout(),
}


def get_readout(name: str) -> Readout:
    if name not in READOUTS:
        raise ValueError(f"unknown readout {name!r}; valid readouts: {', '.join(READOUTS)}")
    return READOUTS[name]


def describe_params() -> str:
    """Every readout's parameters with defaults, as text (for docs and `nsdflow config-help`)."""
    lines = []
    for name, r in READOUTS.items():
        lines.append(f"{name}:" + ("" if r.params else " (no parameters)"))
        for key, p in r.params.items():
            lines.append(f"  {key} [default: {p.default!r}]: {p.description}")
    return "\n".join(lines)
