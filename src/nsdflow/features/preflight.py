"""The preflight of a backbone: build it once on the CPU and run one image through it.

Extraction jobs may wait hours in a GPU queue; a wrong layer name, a pooling that does not fit a
layer, or a checkpoint that holds another network must fail before that, with a message naming
the config key. :func:`check_backbone` does exactly what extraction will do, on one image:

* builds the network from its weights spec (a missing checkpoint, or one that holds another
  architecture, is a :class:`~nsdflow.features.backbones.BackboneError`);
* checks the layer names (an unknown one lists the valid ones);
* runs one forward pass and pools each layer as configured (``cls`` on a convolutional map, say,
  is an error naming ``backbones.<name>.layers.<layer>.pool``);

and returns what each layer will store (its layout, shape and pooled width), which the workflow
writes as ``results/features/<backbone>.preflight.json``, an input of the backbone's extraction.
"""

from __future__ import annotations

import time
from typing import Any

from .backbones import BackboneError, build_backbone
from .pooling import PoolingError, check_pool, grid_shape, pool_output


def check_backbone(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Build backbone ``name`` from ``spec`` on the CPU and pool one image through every layer.

    Returns
    -------
    dict
        ``backbone``, ``kind``, ``model``, ``weights`` (identity: seed or checkpoint sha256),
        ``input_size``, ``layers`` ({layer: {pool, layout, shape, width}}), ``seconds``.

    Raises
    ------
    BackboneError
        Naming the config key (``backbones.<name>...``) and what to do.
    """
    import torch

    t0 = time.time()
    layers = dict(spec.get("layers") or {})
    for layer, cfg in layers.items():
        try:
            check_pool(cfg["pool"])
        except PoolingError as err:
            raise BackboneError(f"backbones.{name}.layers.{layer}.pool: {err}") from None
    backbone = build_backbone(name, spec)  # weights, checkpoint architecture, layer names
    size = backbone.input_size
    pixels = torch.full((1, size, size, 3), 128, dtype=torch.uint8)
    with torch.inference_mode():
        outs = backbone(pixels, list(layers))
    report: dict[str, dict[str, Any]] = {}
    for layer, cfg in layers.items():
        out = outs[layer]
        try:
            pooled = pool_output(out.tensor, out.layout, cfg["pool"], out.prefix)
        except PoolingError as err:
            raise BackboneError(f"backbones.{name}.layers.{layer}.pool: {err} (the layer's output is {out.layout} "
                                f"of shape {tuple(out.tensor.shape[1:])})") from None
        report[layer] = {"pool": cfg["pool"], "layout": out.layout, "shape": list(out.tensor.shape[1:]),
                         "width": int(pooled.shape[1])}
        if cfg["pool"] == "grid":
            report[layer]["grid"] = grid_shape(out.tensor.shape[1:], out.layout, out.prefix)
    return {
        "backbone": name,
        "kind": spec.get("kind"),
        "model": spec.get("model"),
        "weights": backbone.weights_identity(),
        "input_size": size,
        "layers": report,
        "seconds": round(time.time() - t0, 2),
    }
