"""The readout registry: a model's ``readout`` in the config names one of :data:`READOUTS`.

Each entry is the import path of the readout's class (:class:`~.params.Readout`), not the class:
a fit job imports its own readout's module only, and its code digest (:mod:`nsdflow.codeversion`)
covers that module only, so that editing the MLP reruns the MLP's fits and not ridge's, and
adding a readout here reruns nothing.
"""

from __future__ import annotations

from .params import Readout, load_readout

#: Readout name -> ``module:Class``.
READOUTS: dict[str, str] = {
    "ridge": "nsdflow.readouts.linear:RidgeReadout",
    "pca_linear": "nsdflow.readouts.linear:PcaLinearReadout",
    "torch_linear": "nsdflow.readouts.mlp:TorchLinearReadout",
    "mlp": "nsdflow.readouts.mlp:MlpReadout",
    "transformer": "nsdflow.readouts.transformer:TransformerReadout",
    "gaussian": "nsdflow.readouts.gaussian:GaussianReadout",
    "bottleneck": "nsdflow.readouts.bottleneck:BottleneckReadout",
}


def readout_path(name: str) -> str:
    """The ``module:Class`` of readout ``name``; ValueError listing the valid ones."""
    if name not in READOUTS:
        raise ValueError(f"unknown readout {name!r}; valid readouts: {', '.join(READOUTS)}")
    return READOUTS[name]


def get_readout(name: str) -> Readout:
    return load_readout(readout_path(name))


def describe_params() -> str:
    """Every readout's parameters with defaults, as text (`nsdflow readout-params`)."""
    lines = []
    for name in READOUTS:
        r = get_readout(name)
        lines.append(f"{name}:" + ("" if r.params else " (no parameters)"))
        for key, p in r.params.items():
            lines.append(f"  {key} [default: {p.default!r}]: {p.description}")
    return "\n".join(lines)
