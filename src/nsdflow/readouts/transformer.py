"""The ``transformer`` readout (Adeli, Minni & Kriegeskorte 2023, Algonauts 2023 second place): a
DETR-style decoder whose queries stand for regions reads a grid of patch features (:mod:`.transformer_net`).

One job fits both hemispheres of a subject (unit ``subject``: one decoder, lh and rh queries side by
side, as the paper) from a layer stored with ``pool: grid``; queries per ROI of a class (+ one per
hemisphere for the rest) or one per vertex (``queries: vertex``). Checkpoints after every epoch:
a killed job resumes. The last run's cross-attention of every query on a few test images is kept
(``attention``) for the report's attention maps.
"""

from __future__ import annotations

import numpy as np

from ..data.layout import ROI_CLASSES
from .params import Param, Readout, choice, fraction, number, rate

VERTEX = "vertex"
#: Test images whose attention maps a fit keeps: the figure draws the first four and the mean, the
#: table of centres averages all of them (four alone give centres that move with their content).
ATTENTION_IMAGES = 16

PARAMS: dict[str, Param] = {
    "queries": Param("streams", "decoder queries: one per ROI of this ROI class and hemisphere plus one per "
                     "hemisphere for the vertices in none of its ROIs, or 'vertex' (one query per vertex, "
                     "cross-attention only)", choice(*ROI_CLASSES, VERTEX)),
    "layers": Param(1, "decoder layers", number(1, integer=True)),
    "d_model": Param(768, "width of the decoder (a linear projection maps the C input channels to it when "
                     "they differ)", number(4, integer=True)),
    "heads": Param(16, "attention heads (must divide d_model)", number(1, integer=True)),
    "ffn": Param(2048, "hidden units of the decoder's feed-forward block", number(1, integer=True)),
    "dropout": Param(0.1, "dropout in the decoder (attention weights, residual branches, feed-forward)", rate),
    "lr": Param(1e-4, "AdamW learning rate (constant)", number(0, exclusive=True)),
    "weight_decay": Param(1e-4, "AdamW weight decay", number(0)),
    "epochs": Param(20, "training epochs; the weights of the best inner-validation epoch are kept",
                    number(1, integer=True)),
    "batch_size": Param(32, "images per optimisation step", number(1, integer=True)),
    "clip": Param(0.1, "maximum global gradient norm (0: no clipping)", number(0)),
    "inner_val_fraction": Param(0.1, "fraction of the fit images held out to pick the best epoch (never the "
                                "validation split that scores are computed on)", fraction),
    "seed": Param(0, "seed of the initialisation, the inner split, the shuffling and dropout", number(integer=True)),
    "block": Param(64, "rows of the feature source read together (set it to the store's chunk rows): each epoch "
                   "shuffles these blocks, then the images within each", number(1, integer=True)),
    "num_workers": Param(0, "DataLoader worker processes reading the feature source (results do not depend "
                         "on it)", number(0, integer=True)),
}




class TransformerReadout(Readout):
    """The transformer decoder on a grid layer (one ``backbone/layer`` stored with ``pool: grid``)."""

    name = "transformer"
    design = "grid"
    default_standardize = False
    default_fit_jobs = "subject"
    fit_jobs = ("subject", "hemisphere")
    trained = True
    params = PARAMS

    def fit(self, data) -> dict[str, dict[str, np.ndarray]]:
        from .sources import grid_sources, run_predictions
        from .transformer_net import (
            check_params,
            decoder_attention,
            fit_predict,
            query_assignment,
        )

        check_params(data.params)
        (source,) = grid_sources(data, one=True)
        owner, names = query_assignment(data.tables(), data.params["queries"])
        Y = np.concatenate([data.Y[h] for h in data.hemis], axis=1)
        attention = {}

        def fit_run(run, train_rows, Y_train, pred_rows):
            want_model = run is data.runs[-1] and data.params["queries"] != VERTEX
            pred, info = fit_predict(source, train_rows, Y_train, pred_rows, owner, data.params, data.device(),
                                     checkpoint=data.checkpoint(run.name), key=data.run_key(run),
                                     return_model=want_model)
            if want_model:
                attention.update(decoder_attention(info, source, data.n_train + np.arange(
                    min(ATTENTION_IMAGES, len(data.summary["test_nsd_ids"])))))
            return pred

        out = run_predictions(data, Y, fit_run)
        results = data.split_hemispheres(out)
        if attention:  # per hemisphere: its own queries' maps
            for h in data.hemis:
                mine = [i for i, n in enumerate(names) if n.startswith(f"{h}:")]
                results[h].update({"attention": attention["maps"][:, mine], "attention_queries": np.array(
                    [names[i] for i in mine]), "attention_images": attention["images"] - data.n_train})
        return results
