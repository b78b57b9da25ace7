"""Read access to a finished feature store (no torch import: readout jobs stay light)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .chunks import missing_chunks
from .images import lookup_rows


class FeatureStore:
    """Read a finished feature store: ``FeatureStore(path).read(layer, nsd_ids)``.

    A store with a chunk not marked done is refused (it is being written, or its extraction
    was killed): no partial chunk is ever read. ``require_complete=False`` opens it anyway, for
    inspection; :meth:`read` still refuses rows that are not written (they read as NaN).
    """

    def __init__(self, store: str | Path, require_complete: bool = True):
        import zarr

        self.store = Path(store)
        if not (self.store / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.store} is not a feature store (deleted?); rerun its extraction: "
                                    "snakemake --forcerun extract")
        self.group = zarr.open_group(self.store, mode="r")
        self.spec = dict(self.group.attrs["nsdflow_spec"])
        self.nsd_ids = self.group["nsd_ids"][:]
        self.missing = missing_chunks(self.store, len(self.nsd_ids), self.spec["chunk"])
        if self.missing and require_complete:
            n = -(-len(self.nsd_ids) // self.spec["chunk"])
            raise RuntimeError(f"{self.store} is incomplete ({len(self.missing)} of {n} chunks not written); "
                               "rerun its extract rule")

    @property
    def layers(self) -> list[str]:
        return sorted(self.spec["layers"])

    def grid(self, layer: str) -> tuple[int, int, int]:
        """(C, H, W) of a layer stored with ``pool: grid``; ValueError for any other layer."""
        self._check_layer(layer)
        shape = self.group[f"layers/{layer}"].attrs.get("grid")
        if shape is None:
            raise ValueError(f"{self.store}/{layer} is not a grid: store it with pool: grid to read it as maps "
                             f"(it is pooled {self.spec['layers'][layer]['pool']})")
        return tuple(int(x) for x in shape)

    def _check_layer(self, layer: str) -> None:
        if layer not in self.spec["layers"]:
            raise KeyError(f"{self.store} has no layer {layer!r}; it has {', '.join(self.layers)}")

    def read(self, layer: str, nsd_ids) -> np.ndarray:
        """Features of ``layer`` for the given NSD ids, in that order, as float32 (n, D)."""
        self._check_layer(layer)
        rows = lookup_rows(self.nsd_ids, nsd_ids, what=str(self.store))
        order = np.argsort(rows)
        arr = self.group[f"layers/{layer}"]
        out = np.empty((len(rows), arr.shape[1]), dtype=np.float32)
        out[order] = arr.get_orthogonal_selection((rows[order], slice(None)))
        if np.isnan(out).any():
            raise RuntimeError(f"{self.store}/{layer} holds unwritten (NaN) features for requested images; "
                               "rerun its extract rule")
        return out


class GridSource:
    """One grid layer of a store for a list of images, as (N, C, H, W) maps: what the readouts that
    read feature maps take (``.shape``, ``.read(sorted rows)``; rows index ``nsd_ids``)."""

    def __init__(self, store: FeatureStore, layer: str, nsd_ids):
        self.store, self.layer = store, layer
        self.nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
        self.grid = store.grid(layer)
        self.shape = (len(self.nsd_ids), *self.grid)

    def read(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return self.store.read(self.layer, self.nsd_ids[rows]).reshape(len(rows), *self.grid)


class ArraySource:
    """Feature maps held in memory, with the interface of :class:`GridSource` (``shape`` (N, C, H, W)
    and ``read(sorted rows)`` as float32): for tests, and for maps that fit in memory."""

    def __init__(self, array):
        self.array = np.asarray(array, dtype=np.float32)
        if self.array.ndim != 4:
            raise ValueError(f"feature maps must be (images, channels, height, width), got shape {self.array.shape}")
        self.shape = self.array.shape

    def read(self, rows) -> np.ndarray:
        return self.array[np.asarray(rows)]
