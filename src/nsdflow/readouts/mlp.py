"""The torch readouts on a feature matrix: ``torch_linear`` (one nn.Linear per region, the thesis's
CLIP-ROI) and ``mlp`` (the thesis's CLIP-DNN). Their training is in :mod:`.torch_models`, imported
only when a fit runs (torch is not needed to plan the DAG)."""

from __future__ import annotations

import numpy as np

from .params import Param, Readout, boolean, fraction, hidden_sizes, number

_TRAINING = {
    "batch_size": Param(64, "images per optimisation step", number(1, integer=True)),
    "weight_decay": Param(1e-2, "AdamW weight decay", number(0)),
    "step_size": Param(10, "StepLR: epochs between learning-rate decays", number(1, integer=True)),
    "gamma": Param(0.75, "StepLR: learning-rate factor at each decay", number(0, exclusive=True)),
    "seed": Param(0, "seed of the initialisation, the shuffling and (mlp) the inner split", number(integer=True)),
    "standardize_targets": Param(True, "fit z-scored responses (per vertex, on the fit images) and map "
                                 "predictions back", boolean),
}


class TorchLinearReadout(Readout):
    """One ``nn.Linear`` per region (the thesis's CLIP-ROI): MSE, AdamW, StepLR, fixed epochs."""

    name = "torch_linear"
    design = "matrix"
    default_standardize = True
    default_fit_jobs = "hemisphere"  # one torch import per hemisphere, one model per region inside
    separable = False
    trained = True
    params = {
        "lr": Param(1e-4, "AdamW learning rate", number(0, exclusive=True)),
        "epochs": Param(30, "training epochs", number(1, integer=True)),
        **_TRAINING,
    }

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        from .torch_models import fit_predict_torch

        Y_fit = Y_fit if rows is None else np.take(Y_fit, rows, axis=0)
        return fit_predict_torch("linear", prepared["X_fit"], Y_fit, prepared["X_pred"], params, _device(xp))


class MlpReadout(Readout):
    """An MLP per region (the thesis's CLIP-DNN): blocks of Linear, BatchNorm1d, LeakyReLU and
    optional dropout, optional residual blocks, early stopping on an inner split of the fit images."""

    name = "mlp"
    design = "matrix"
    default_standardize = True
    default_fit_jobs = "hemisphere"
    separable = False
    trained = True
    params = {
        "hidden": Param([512], "units of each hidden block (Linear, BatchNorm1d, LeakyReLU, dropout)", hidden_sizes),
        "dropout": Param(0.1, "dropout after each block's activation (0: none)", number(0)),
        "residual": Param(False, "add each block's input to its output where their widths are equal", boolean),
        "negative_slope": Param(0.01, "LeakyReLU negative slope", number(0)),
        "lr": Param(1e-3, "AdamW learning rate", number(0, exclusive=True)),
        "epochs": Param(100, "maximum training epochs", number(1, integer=True)),
        "patience": Param(10, "stop after this many epochs without a better inner-validation loss",
                          number(1, integer=True)),
        "inner_val_fraction": Param(0.1, "fraction of the fit images held out for early stopping (never the "
                                    "validation split that scores are computed on)", fraction),
        **_TRAINING,
    }

    def fit_predict(self, prepared, Y_fit, params, xp=None, rows=None):
        from .torch_models import fit_predict_torch

        Y_fit = Y_fit if rows is None else np.take(Y_fit, rows, axis=0)
        return fit_predict_torch("mlp", prepared["X_fit"], Y_fit, prepared["X_pred"], params, _device(xp))


def _device(xp) -> str:
    return "cuda" if xp is not None and getattr(xp, "name", "") == "torch_cuda" else "cpu"
