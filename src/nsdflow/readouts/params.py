"""What every readout declares: its parameters (:class:`Param`, with the checks below) and the
:class:`Readout` base class (design kind, fit jobs, parameter normalisation).

Light on purpose (numpy only): the planner reads every configured readout's declaration when the
DAG is built, and a fit job imports only its own readout's module (see :mod:`.registry`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Param:
    """One readout parameter: its default, what it means, and a check returning an error or None."""

    default: Any
    description: str
    check: Callable[[Any], str | None]


def number(minimum: float | None = None, integer: bool = False, exclusive: bool = False):
    def check(v):
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            return "must be an integer" if integer else "must be a number"
        if minimum is not None and (v <= minimum if exclusive else v < minimum):
            return f"must be {'>' if exclusive else '>='} {minimum}"
        return None
    return check


def choice(*choices):
    def check(v):
        return None if v in choices else f"must be one of {', '.join(map(str, choices))}"
    return check


def boolean(v):
    return None if isinstance(v, bool) else "must be true or false"


def alphas(v):
    if not isinstance(v, list) or not v or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v):
        return "must be a non-empty list of numbers"
    if any(a <= 0 for a in v):
        return "must all be > 0"
    return None


def hidden_sizes(v):
    if not isinstance(v, list) or not v or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v):
        return "must be a non-empty list of positive integers (units per hidden block)"
    return None


def rate(v):
    """A dropout rate or a decay: a number in [0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        return "must be a number in [0, 1)"
    return None


def fraction(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        return "must be a number between 0 and 1 (exclusive)"
    return None


class Readout:
    """A readout's description: its parameters, the design it fits from, its fit jobs."""

    name: str = ""
    design: str = ""  # which design kind it fits from (see .designs)
    default_standardize: bool = True  # standardise the feature set's columns unless the model says otherwise
    default_fit_jobs: str = "region"  # "region", "hemisphere" or "subject" (both hemispheres) jobs
    fit_jobs: tuple[str, ...] = ("region", "hemisphere")  # the units it can fit
    separable: bool = False  # a fit on several regions equals the fits of each (one alpha per target)
    trained: bool = False  # trained by gradient steps: takes cv_folds, checkpoints its runs
    params: dict[str, Param] = {}

    def fit_predict(self, prepared: dict[str, np.ndarray], Y_fit: np.ndarray, params: dict[str, Any],
                    xp=None, rows=None, loo_out=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Fit on ``Y_fit`` (``rows``: the rows of it that the design's fit rows are; default all) and
        predict the design's prediction rows: ``(predictions, per-target info)``. Decomposition
        readouts also fill ``loo_out`` (Y_fit's shape) with leave-one-out predictions when given."""
        raise NotImplementedError

    def fit(self, data) -> dict[str, dict[str, np.ndarray]]:
        """Fit one job's runs (:class:`~nsdflow.readouts.fit.FitData`): per hemisphere, ``val_pred``,
        ``test_pred`` and any per-vertex arrays. Design readouts fit through :meth:`fit_predict`."""
        from .fit import fit_design

        return fit_design(self, data)

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

    def pretrains(self, params) -> bool:
        """Whether a fit starts from a network pretrained on every subject (rule pretrain)."""
        return False

    def design_params(self, params):
        return {"decomposition": "auto", "n_folds": None} if self.design == "decomposition" else {}


def load_readout(path: str) -> Readout:
    """The readout of a ``module:Class`` path, as :data:`.registry.READOUTS` names them (what the
    planner passes to fit jobs, so that a fit job imports its own readout's module and no other)."""
    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)()
