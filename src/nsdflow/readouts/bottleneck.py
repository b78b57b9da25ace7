"""The ``bottleneck`` readout (FBNET, Ndubuaku 2023): a network from a feature PCA to each hemisphere's
response PCA, with a leak of the targets in training and a racing loss, pretrained on every subject
and fine-tuned on each (:mod:`.bottleneck_net`).

One job fits both hemispheres of a subject (unit ``subject``: the racing loss couples them), from a
matrix design (the feature set's PCA, shared across subjects with ``pca.scope: all``), starting from
rule ``pretrain``'s network when ``pretrain`` is on. Each idea (``leak``, ``racing``, ``pretrain``)
is a switch, for the ablation (``bench/fbnet_ablation.py``).
"""

from __future__ import annotations

import numpy as np

from .params import Param, Readout, boolean, choice, fraction, number, rate

PARAMS: dict[str, Param] = {
    "hidden": Param(6000, "width of the widening layer and of the residual block (theirs: 20 x 300 inputs)",
                    number(1, integer=True)),
    "dropout": Param(0.2, "dropout on the hidden layer, before the leak injection (0: none)", rate),
    "n_components": Param(75, "PCA components of each hemisphere's responses, fitted on the fit images",
                          number(1, integer=True)),
    "leak": Param(True, "inject the targets' PCA components (and structured noise) into the hidden layer in "
                  "training, and remove the noise at inference", boolean),
    "leak_a": Param(0.02, "leak: weight of the targets (alpha)", number(0)),
    "leak_b": Param(0.002, "leak: weight of the structured noise (beta)", number(0)),
    "inference_noise": Param("sample", "leak: the noise z removed at inference: sample (one N(0, var) draw per "
                             "image, seeded, as theirs) or mean (z = 0, its expectation)", choice("sample", "mean")),
    "racing": Param(True, "racing loss on the components' cosines of both hemispheres; false: MSE on the "
                    "components", boolean),
    "pretrain": Param(True, "start each subject's fit from the network pretrained on all subjects", boolean),
    "lr": Param(1e-4, "Lion learning rate", number(0, exclusive=True)),
    "beta1": Param(0.9, "Lion: interpolation of momentum and gradient whose sign is the step", rate),
    "beta2": Param(0.99, "Lion: decay of the momentum", rate),
    "weight_decay": Param(1e-3, "Lion decoupled weight decay (times lr), on every parameter", number(0)),
    "batch_size": Param(128, "images per optimisation step", number(1, integer=True)),
    "epochs": Param(10, "epochs of each subject's fit (the fine-tune when pretrained; 0: the pretrained "
                    "network as it is)", number(0, integer=True)),
    "pretrain_epochs": Param(10, "epochs of the pretraining on all subjects", number(1, integer=True)),
    "inner_val_fraction": Param(0.05, "fraction of the fit images (of each subject) held out to keep the best "
                                "epoch (never the validation split that scores are computed on)", fraction),
    "seed": Param(0, "seed of the initialisation, the shuffling, the noise and the inner split",
                  number(integer=True)),
}


class BottleneckReadout(Readout):
    """FBNET's bottleneck network on a matrix design (see the module docstring)."""

    name = "bottleneck"
    design = "matrix"
    default_standardize = True
    default_fit_jobs = "subject"
    fit_jobs = ("subject",)
    trained = True
    params = PARAMS

    def pretrains(self, params) -> bool:
        return bool(params["pretrain"])

    def pretrain(self, subjects, exclude, params, device, checkpoint, key) -> dict:
        """The network pretrained on every subject (rule pretrain): ``subjects[name] = (X, Y_lh, Y_rh,
        rows)``, X and the responses' ``rows`` the run's training images; ``exclude[name]``: positions
        in ``rows`` no pretraining may use."""
        from .bottleneck_net import SubjectData, pretrain

        data = {name: SubjectData(X, np.asarray(Y_lh[rows], np.float32), np.asarray(Y_rh[rows], np.float32))
                for name, (X, Y_lh, Y_rh, rows) in subjects.items()}
        state, _ = pretrain(data, params, device, checkpoint, key, exclude=exclude)
        return state

    def fit(self, data) -> dict[str, dict[str, np.ndarray]]:
        import torch

        from .bottleneck_net import SubjectData, fit, predict
        from .sources import run_predictions

        hemis = data.hemis
        V = [data.Y[h].shape[1] for h in hemis]
        Y = np.concatenate([data.Y[h] for h in hemis], axis=1)

        def fit_run(run, train_rows, Y_train, pred_rows):
            X = data.run_matrix(run)
            init = None
            if data.params["pretrain"]:
                init = torch.load(data.pretrained[run.name], map_location="cpu", weights_only=True)
            fitted = fit(SubjectData(X[train_rows], Y_train[:, :V[0]], Y_train[:, V[0]:]), data.params,
                         data.device(), data.checkpoint(run.name), data.run_key(run), init=init)
            lh, rh = predict(fitted, X[pred_rows])
            return np.concatenate([lh, rh], axis=1)

        return data.split_hemispheres(run_predictions(data, Y, fit_run))
