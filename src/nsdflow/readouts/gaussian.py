"""The ``gaussian`` readout (Lurz et al. 2020; the hierarchical variant of Dynamic-V1FM, SENSORIUM 2023):
each vertex reads every level's feature map at a learned position, started from a grid search of
positions with ridge (:mod:`.gaussian_net`).

Jobs per hemisphere (default) or per region, from layers stored with ``pool: grid`` (one level each).
The learned positions are kept per vertex (``mu_x``, ``mu_y``, +x right, +y down, as the demo's
receptive fields) from the run on every training image (or the last fold). They are grid_sample's
coordinates (``align_corners=True``): -1 and +1 are the centres of a map's first and last cells,
so on a map W cells wide the image position in half-widths is ``mu * (W - 1) / W``.
"""

from __future__ import annotations

import numpy as np

from . import ridge
from .params import Param, Readout, alphas, boolean, fraction, number


def _widths(v):
    if not isinstance(v, list) or not v or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in v):
        return "must be a non-empty list of numbers (Gaussian pooling widths in map half-widths, 0 for a point)"
    return None if all(w >= 0 for w in v) else "must all be >= 0"


PARAMS: dict[str, Param] = {
    "positions": Param(27, "side P of the search's P x P grid of positions over [-1, 1]^2 (27: the pixel centres "
                       "of a 27 x 27 map such as AlexNet's features.2)", number(2, integer=True)),
    "widths": Param([0.0], "standard deviations of the search's Gaussian pooling windows, in map half-widths "
                    "(0: a bilinear point, what the trained model reads in evaluation; wider windows also set "
                    "the vertex's initial jitter)", _widths),
    "alphas": Param(list(ridge.DEFAULT_ALPHAS), "the search's ridge alphas (one chosen per vertex and candidate "
                    "by GCV)", alphas),
    "init_only": Param(False, "predict with the search's ridge fits, train nothing (the ablation)", boolean),
    "lr": Param(1e-3, "Adam learning rate", number(0, exclusive=True)),
    "l1": Param(0.0, "L1 penalty on the channel weights (Lurz's feature regulariser): this times the mean over "
                "vertices of sum |w|, added to the MSE of z-scored responses", number(0)),
    "epochs": Param(50, "maximum training epochs", number(1, integer=True)),
    "patience": Param(8, "stop after this many epochs without a better inner-split loss", number(1, integer=True)),
    "batch_size": Param(32, "images per optimisation step", number(1, integer=True)),
    "sigma_init": Param(0.15, "initial jitter of the sampled positions (standard deviation per axis, in map "
                        "half-widths); learned from there", number(0)),
    "hidden": Param(0, "hidden units per level of the hierarchical variant's shared nonlinear stage (0: none)",
                    number(0, integer=True)),
    "inner_val_fraction": Param(0.1, "fraction of the fit images held out to choose the epoch (never the split "
                                "that scores are computed on)", fraction),
    "seed": Param(0, "seed of the inner split, the shuffling and the jitter", number(integer=True)),
}


class GaussianReadout(Readout):
    """A Gaussian spatial readout per vertex over one or more grid layers."""

    name = "gaussian"
    design = "grid"
    default_standardize = False
    default_fit_jobs = "hemisphere"
    fit_jobs = ("hemisphere", "region")
    trained = True
    params = PARAMS

    def fit(self, data) -> dict[str, dict[str, np.ndarray]]:
        from .gaussian_net import fit_predict
        from .sources import grid_sources, run_predictions

        sources = grid_sources(data)
        (h,) = data.hemis
        positions = {}

        def fit_run(run, train_rows, Y_train, pred_rows):
            pred, info = fit_predict(sources, train_rows, Y_train, pred_rows, data.params, data.device(),
                                     checkpoint=data.checkpoint(run.name), key=data.run_key(run))
            positions[run.name] = info["mu"]
            return pred

        out = run_predictions(data, data.Y[h], fit_run)
        mu = positions[data.runs[-1].name]  # the run on every training image (or the last fold)
        out.update(mu_x=np.asarray(mu[:, 0], np.float32), mu_y=np.asarray(mu[:, 1], np.float32))
        return {h: out}
