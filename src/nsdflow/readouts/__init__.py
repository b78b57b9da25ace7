"""Readouts: models from backbone features to vertex responses, in a registry by name.

A readout has two steps, so that whatever does not depend on the targets is computed once per
subject and feature set, not once per region job:

``prepare(X_fit, X_pred, params) -> dict of arrays``
    The cached step (e.g. standardisation and SVD for ridge).
``fit_predict(prepared, Y_fit, params) -> (predictions, per-target info)``
    One region's fit, from the prepared arrays and that region's training responses.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from . import ridge


class Readout(Protocol):
    #: The params that ``prepare`` reads: only these invalidate the cached step.
    prepare_keys: tuple[str, ...]

    def prepare(self, X_fit: np.ndarray, X_pred: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]: ...

    def fit_predict(
        self, prepared: dict[str, np.ndarray], Y_fit: np.ndarray, params: dict[str, Any]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


class RidgeReadout:
    """Ridge regression, one alpha per vertex chosen by ``gcv`` or ``loo`` (see :mod:`.ridge`).

    params: ``alphas`` (list of float), ``cv`` (gcv | loo).
    """

    prepare_keys: tuple[str, ...] = ()

    def prepare(self, X_fit, X_pred, params):
        mean, scale = ridge.standardize_fit(X_fit)
        dec = ridge.decompose((X_fit - mean) / scale)
        P = ((X_pred - mean) / scale) @ dec.Vt.T
        return {"U": dec.U, "s": dec.s, "P": P.astype(np.float32)}

    def fit_predict(self, prepared, Y_fit, params):
        dec = ridge.Decomposition(prepared["U"], prepared["s"], np.empty((0, 0), np.float32))
        pred, alphas = ridge.fit_predict(dec, Y_fit, prepared["P"], params.get("alphas", ridge.DEFAULT_ALPHAS),
                                         params.get("cv", "gcv"))
        return pred, {"alpha": alphas}


#: The readout registry: a model's ``readout`` in the config picks its entry.
READOUTS: dict[str, Readout] = {
    "ridge": RidgeReadout(),
}


def get_readout(name: str) -> Readout:
    if name not in READOUTS:
        raise ValueError(f"unknown readout {name!r}; valid readouts: {', '.join(READOUTS)}")
    return READOUTS[name]
