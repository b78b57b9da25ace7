"""The fsaverage5 surface that nilearn ships, used to place the demo's ROIs and to draw brain maps.

fsaverage5's 10,242 vertices per hemisphere are the first 10,242 of fsaverage's 163,842, so
an array over fsaverage restricted to its first 10,242 entries is an array over fsaverage5:
no download is ever needed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .layout import FSAVERAGE5_N_VERTICES

_NILEARN_HEMI = {"lh": "left", "rh": "right"}


@lru_cache(maxsize=None)
def fsaverage5_mesh(hemi: str, kind: str = "pial") -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (10242, 3) and triangles of one fsaverage5 hemisphere mesh.

    ``kind`` is one of nilearn's bundled meshes: ``pial``, ``white``, ``infl``, ``sphere``, ``flat``.
    """
    import nibabel as nib
    from nilearn import datasets

    files = datasets.fetch_surf_fsaverage("fsaverage5")  # bundled with nilearn: no download
    img = nib.load(files[f"{kind}_{_NILEARN_HEMI[hemi]}"])
    coords = np.asarray(img.darrays[0].data, dtype=np.float64)
    faces = np.asarray(img.darrays[1].data, dtype=np.int64)
    assert coords.shape[0] == FSAVERAGE5_N_VERTICES
    return coords, faces


@lru_cache(maxsize=None)
def fsaverage5_sulc(hemi: str) -> np.ndarray:
    """Sulcal depth per fsaverage5 vertex (the background of brain maps)."""
    import nibabel as nib
    from nilearn import datasets

    files = datasets.fetch_surf_fsaverage("fsaverage5")
    return np.asarray(nib.load(files[f"sulc_{_NILEARN_HEMI[hemi]}"]).darrays[0].data, dtype=np.float64)
