"""Readouts: models from backbone features to vertex responses (see :mod:`.registry`).

Per subject and feature set (:mod:`.featuresets`: layers concatenated, standardised on the fit
images, optionally reduced by PCA) a *design* is cached (:mod:`.designs`) and shared by every
model, hemisphere and region job that fits from it; each readout (:mod:`.linear`, :mod:`.mlp`)
fits one region or a whole hemisphere from its design; :mod:`.merge` assembles a model's fits
into hemispheres and :mod:`.ensembles` combines models. The stage's commands are in
:mod:`.commands`.
"""
