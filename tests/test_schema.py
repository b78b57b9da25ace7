"""Every list of allowed values has one source: the schema's enums equal the code's registries."""

from __future__ import annotations

from nsdflow.config import load_schema
from nsdflow.data.layout import ROI_CLASSES
from nsdflow.features.backbones import BACKBONES
from nsdflow.features.images import COMPRESSIONS, SOURCES
from nsdflow.features.pooling import POOL_RE
from nsdflow.readouts.backend import BACKENDS
from nsdflow.readouts.ensembles import METHODS
from nsdflow.readouts.registry import READOUTS, get_readout

SCHEMA = load_schema()


def prop(*path: str) -> dict:
    node = SCHEMA
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return node


def test_schema_enums_are_the_registries():
    assert prop("models", "*", "readout")["enum"] == list(READOUTS)
    assert prop("backbones", "*", "kind")["enum"] == list(BACKBONES)
    assert prop("ensembles", "*", "method")["enum"] == list(METHODS)
    assert prop("readouts", "backend")["enum"] == list(BACKENDS)
    assert prop("regions", "classes")["items"]["enum"] == list(ROI_CLASSES)
    assert prop("plots", "brain_maps", "outline")["items"]["enum"] == list(ROI_CLASSES)
    assert prop("images", "source")["enum"] == list(SOURCES)
    assert prop("images", "compression")["enum"] == list(COMPRESSIONS)
    assert prop("backbones", "*", "layers", "*", "pool")["pattern"] == POOL_RE.pattern


def test_every_readout_in_the_registry_loads_and_declares_its_parameters():
    for name in READOUTS:
        r = get_readout(name)
        assert r.name == name and r.design and r.default_fit_jobs in r.fit_jobs
        assert set(r.fit_jobs) <= {"region", "hemisphere", "subject"}
        assert r.normalize({}) == {k: p.default for k, p in r.params.items()}
