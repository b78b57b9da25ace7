"""Synthetic inputs for readout tests and benchmarks: feature stores written without extraction.

:func:`write_feature_store` writes a store in the layout that ``nsdflow extract`` writes and
:class:`nsdflow.features.store.FeatureStore` reads (``nsdflow_spec`` attrs, ``nsd_ids``,
``layers/<layer>``, ``done/<chunk>`` markers) plus its JSON manifest, so that the readout stage
can run on features made up for the purpose (a known ground truth, or a full-size benchmark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_write_json


def write_feature_store(
    store: str | Path,
    nsd_ids: np.ndarray,
    layers: dict[str, np.ndarray],
    chunk: int = 256,
    dtype: str = "float32",
    manifest: str | Path | None = None,
    name: str = "synthetic",
) -> Path:
    """Write ``layers`` ({layer: (N, D) array, rows in ``nsd_ids`` order}) as a finished store.

    Rows are sorted by NSD id as extraction stores them. Returns the store's path.
    """
    import zarr

    store = Path(store)
    nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
    order = np.argsort(nsd_ids)
    nsd_ids = nsd_ids[order]
    spec = {"format": 1, "backbone": name, "kind": "synthetic",
            "layers": {layer: {"pool": "full"} for layer in sorted(layers)}, "dtype": dtype, "chunk": int(chunk)}
    group = zarr.open_group(store, mode="w")
    group.attrs["nsdflow_spec"] = spec
    group.create_array("nsd_ids", data=nsd_ids, chunks=(len(nsd_ids),))
    for layer, values in layers.items():
        values = np.asarray(values)[order].astype(dtype)
        arr = group.create_array(f"layers/{layer}", shape=values.shape, chunks=(chunk, values.shape[1]), dtype=dtype,
                                 fill_value=np.nan)
        for c in range(0, len(values), chunk):
            arr[c:c + chunk] = values[c:c + chunk]
    (store / "done").mkdir(exist_ok=True)
    for c in range(-(-len(nsd_ids) // chunk)):
        (store / "done" / str(c)).touch()
    if manifest:
        atomic_write_json(manifest, {"spec": spec, "store": str(store), "n_images": int(len(nsd_ids)),
                                     "layers": {k: {"shape": list(np.shape(v)), "dtype": dtype}
                                                for k, v in layers.items()}})
    return store
