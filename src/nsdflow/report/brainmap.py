"""Brain maps: per-vertex values drawn on the fsaverage5 surface that nilearn ships (no download).

The challenge vertices of a hemisphere are the fsaverage vertices marked in
``roi_masks/{hemi}.all-vertices_fsaverage_space.npy``, in ascending order. fsaverage5's 10,242
vertices are the first 10,242 of fsaverage's 163,842 (the icosahedron is refined by adding
vertices, never moving the old ones), so a challenge vertex whose fsaverage index is below
10,242 *is* an fsaverage5 vertex. On the demo every challenge vertex is; on the real data about
one in sixteen is, evenly spread over the measured patch, and only those are drawn.

The renderer is a small orthographic painter: each view rotates the inflated mesh, drops the
faces turned away from the viewer, sorts the rest back to front and fills them as one
``PolyCollection`` (rasterised in the SVG), lit from the viewer and shaded by sulcal depth where
there is no data. No 3-D axes, so six panels take about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..data.layout import FSAVERAGE5_N_VERTICES, HEMISPHERES

_NILEARN_HEMI = {"lh": "left", "rh": "right"}

#: Where the viewer stands, per view and hemisphere: (screen x, screen y, towards the viewer),
#: each a signed axis of fsaverage's RAS coordinates (0: x right, 1: y anterior, 2: z superior).
VIEWS: dict[str, dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]] = {
    # Lateral: anterior towards the outside of the figure; medial: anterior towards its middle.
    "lateral": {"lh": ((1, -1), (2, 1), (0, -1)), "rh": ((1, 1), (2, 1), (0, 1))},
    "medial": {"lh": ((1, 1), (2, 1), (0, 1)), "rh": ((1, -1), (2, 1), (0, -1))},
    # Ventral: from below, rolled out of the lateral view (anterior where it is there), lateral side up.
    "ventral": {"lh": ((1, -1), (0, -1), (2, -1)), "rh": ((1, 1), (0, 1), (2, -1))},
}
HEMI_NAMES = {"lh": "left hemisphere", "rh": "right hemisphere"}


@dataclass
class SurfaceMap:
    """Values over one fsaverage5 hemisphere (NaN where nothing is drawn) and what was left out."""

    hemi: str
    values: np.ndarray  # (10242,) float64, NaN off the challenge vertices
    n_drawn: int  # challenge vertices on fsaverage5
    n_total: int  # challenge vertices of the hemisphere
    labels: np.ndarray | None = None  # (10242,) int ROI label for outlines (0: none), or None


@lru_cache(maxsize=None)
def load_mesh(hemi: str, kind: str = "infl") -> tuple[np.ndarray, np.ndarray | None]:
    """One fsaverage5 hemisphere from the GIFTI files bundled with nilearn: ``(coords, faces)``.

    ``kind``: ``infl``, ``pial``, ``white``, ``sphere``, ``flat`` (a mesh) or ``sulc`` (sulcal
    depth per vertex; faces None). Same files as :func:`nsdflow.surface.fsaverage5_mesh`, read
    without importing ``nilearn.datasets`` (which costs seconds: it imports scikit-learn).
    """
    import importlib.util

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed; it ships the fsaverage5 mesh the brain maps are drawn on")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "fsaverage5"
    path = path / f"{kind}_{_NILEARN_HEMI[hemi]}.gii.gz"
    if not path.is_file():
        raise RuntimeError(f"{path}: nilearn's bundled fsaverage5 file is missing (nilearn>=0.11 ships it)")
    arrays = nib.load(path).darrays
    data = np.asarray(arrays[0].data, dtype=np.float64)
    if data.shape[0] != FSAVERAGE5_N_VERTICES:
        raise RuntimeError(f"{path}: {data.shape[0]} vertices, expected {FSAVERAGE5_N_VERTICES}")
    faces = np.asarray(arrays[1].data, dtype=np.int64) if len(arrays) > 1 else None
    return data, faces


def to_fsaverage5(values: np.ndarray, fsaverage_indices: np.ndarray, hemi: str,
                  labels: np.ndarray | None = None) -> SurfaceMap:
    """Place per-challenge-vertex ``values`` on fsaverage5.

    Parameters
    ----------
    values : (V,) array
        One value per challenge vertex (an fMRI column), in challenge order.
    fsaverage_indices : (V,) int array
        The fsaverage index of each challenge vertex (``np.flatnonzero`` of the all-vertices mask).
    hemi : "lh" or "rh"
    labels : (V,) int array, optional
        An ROI label per challenge vertex, carried along for outlines.

    Returns
    -------
    SurfaceMap
        Values at the challenge vertices that are fsaverage5 vertices; NaN elsewhere.
    """
    values = np.asarray(values, dtype=np.float64)
    idx = np.asarray(fsaverage_indices, dtype=np.int64)
    if values.shape != idx.shape:
        raise ValueError(f"{hemi}: {values.size} values for {idx.size} challenge vertices in the all-vertices mask")
    keep = idx < FSAVERAGE5_N_VERTICES
    out = np.full(FSAVERAGE5_N_VERTICES, np.nan)
    out[idx[keep]] = values[keep]
    lab = None
    if labels is not None:
        lab = np.zeros(FSAVERAGE5_N_VERTICES, dtype=np.int64)
        lab[idx[keep]] = np.asarray(labels)[keep]
    return SurfaceMap(hemi=hemi, values=out, n_drawn=int(keep.sum()), n_total=int(idx.size), labels=lab)


def project(coords: np.ndarray, hemi: str, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Screen coordinates (N, 2) and the height towards the viewer (N,) of mesh vertices."""
    try:
        (ax, sx), (ay, sy), (az, sz) = VIEWS[view][hemi]
    except KeyError:
        raise ValueError(f"unknown view {view!r} or hemisphere {hemi!r}; views: {', '.join(VIEWS)}") from None
    screen = np.stack([sx * coords[:, ax], sy * coords[:, ay]], axis=1)
    return screen, sz * coords[:, az]


def visible_faces(coords: np.ndarray, faces: np.ndarray, hemi: str, view: str):
    """Faces turned towards the viewer, back to front: ``(order, screen, facing)``.

    ``order`` indexes ``faces``; ``facing`` in (0, 1] is the cosine between each face's outward
    normal and the direction towards the viewer (1: seen square on).
    """
    screen, height = project(coords, hemi, view)
    _, _, (az, sz) = VIEWS[view][hemi]
    p = coords[faces]  # (F, 3 corners, 3)
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    # Outward normals point away from the mesh's centre on average; flip a mesh wound the other way.
    if np.einsum("ij,ij->", normal, p.mean(axis=1) - coords.mean(axis=0)) < 0:
        normal = -normal
    facing = sz * normal[:, az]
    front = np.flatnonzero(facing > 0)
    depth = height[faces[front]].mean(axis=1)
    order = front[np.argsort(depth, kind="stable")]
    return order, screen, facing[order]


def _face_values(values: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Mean of a face's corners where all three have a value, NaN otherwise."""
    return values[faces].mean(axis=1)


def outline_segments(labels: np.ndarray, faces: np.ndarray, screen: np.ndarray) -> np.ndarray:
    """Line segments (S, 2, 2) in screen coordinates along the borders between ROI labels.

    A face whose corners carry two labels gets a segment between the midpoints of its two
    mixed edges; one with three labels gets three, from those midpoints to its centre. Borders
    between label 0 (no ROI, or no data) and an ROI are drawn; borders of nothing are not.
    """
    lab = labels[faces]
    diff = np.stack([lab[:, 0] != lab[:, 1], lab[:, 1] != lab[:, 2], lab[:, 2] != lab[:, 0]], axis=1)
    keep = diff.any(axis=1) & (lab > 0).any(axis=1)
    f, d = faces[keep], diff[keep]
    corners = screen[f]  # (F, 3, 2)
    mids = (corners + np.roll(corners, -1, axis=1)) / 2  # midpoint of edge k = (corner k, corner k+1)
    segments = []
    two = d.sum(axis=1) == 2
    if two.any():
        m, dd = mids[two], d[two]
        idx = np.argsort(~dd, axis=1, kind="stable")[:, :2]  # the two mixed edges
        segments.append(np.stack([m[np.arange(len(m)), idx[:, 0]], m[np.arange(len(m)), idx[:, 1]]], axis=1))
    three = d.sum(axis=1) == 3
    if three.any():
        m, centre = mids[three], corners[three].mean(axis=1)
        for k in range(3):
            segments.append(np.stack([m[:, k], centre], axis=1))
    return np.concatenate(segments) if segments else np.zeros((0, 2, 2))


def draw_view(ax, coords, faces, sulc, surface_map: SurfaceMap, view: str, cmap, norm) -> None:
    """Draw one view of one hemisphere into a 2-D matplotlib axes."""
    from matplotlib.collections import LineCollection, PolyCollection

    hemi = surface_map.hemi
    order, screen, facing = visible_faces(coords, faces, hemi, view)
    f = faces[order]
    light = (0.45 + 0.55 * facing)[:, None]
    # Background: gyri light, sulci darker, like every surface viewer.
    gyrus = (sulc[f].mean(axis=1) < 0)
    base = np.where(gyrus, 0.82, 0.6)[:, None] * np.ones((1, 3))
    rgb = base * light
    vals = _face_values(surface_map.values, f)
    has = np.isfinite(vals)
    if has.any():
        colours = np.asarray(cmap(norm(vals[has])))[:, :3]
        rgb[has] = colours * (0.35 + 0.65 * light[has])
    polys = screen[f]
    coll = PolyCollection(polys, facecolors=rgb, edgecolors=rgb, linewidths=0.15, antialiased=False,
                          rasterized=True)
    ax.add_collection(coll)
    if surface_map.labels is not None:
        segments = outline_segments(surface_map.labels, f, screen)
        ax.add_collection(LineCollection(segments, colors="white", linewidths=0.8))
    lo, hi = screen.min(axis=0), screen.max(axis=0)
    pad = 0.02 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.axis("off")


def plot_brain_map(
    maps: dict[str, SurfaceMap],
    out: str | Path,
    title: str,
    colorbar_label: str,
    vmin: float,
    vmax: float,
    cmap: str = "inferno",
    views: tuple[str, ...] = ("lateral", "medial", "ventral"),
    note: str | None = None,
    mesh: str = "infl",
) -> None:
    """Both hemispheres in lateral, medial and ventral views on one colour scale; PNG and SVG.

    Parameters
    ----------
    maps : {"lh": SurfaceMap, "rh": SurfaceMap}
    out : path of the PNG; the SVG is written beside it (the meshes rasterised, text as text).
    title, colorbar_label : text of the figure.
    vmin, vmax : the colour scale, shared by every panel; values beyond it take its end colours.
    cmap : a matplotlib colour map.
    note : a line under the title (how many vertices are drawn, what the outlines are).
    mesh : the fsaverage5 mesh to draw on (``infl``, ``pial``, ``white``).
    """
    from matplotlib import colors as mcolors

    from .plots import _mpl, _save

    if not vmax > vmin:
        raise ValueError(f"the colour scale needs vmin < vmax, got {vmin} and {vmax}")
    plt = _mpl()
    colour_map = plt.get_cmap(cmap)
    norm = mcolors.Normalize(vmin=vmin, vmax=vmax, clip=True)
    hemis = [h for h in HEMISPHERES if h in maps]
    meshes = {h: load_mesh(h, mesh) for h in hemis}
    # Each row as high as its view of the brain is (lateral and medial views are wider than high).
    aspect = []
    for view in views:
        screen, _ = project(meshes[hemis[0]][0], hemis[0], view)
        extent = np.ptp(screen, axis=0)
        aspect.append(extent[1] / extent[0])
    width = 3.4
    heights = [width * a for a in aspect]
    top_space, bottom_space = 0.9, 0.1
    fig_h = sum(heights) + top_space + bottom_space + 0.1 * len(views)
    fig = plt.figure(figsize=(width * len(hemis) + 1.3, fig_h))
    grid = fig.add_gridspec(len(views), len(hemis) + 1, width_ratios=[1] * len(hemis) + [0.05],
                            height_ratios=heights, hspace=0.08, wspace=0.03, top=1 - top_space / fig_h,
                            bottom=bottom_space / fig_h, left=0.05, right=0.91)
    for j, hemi in enumerate(hemis):
        coords, faces = meshes[hemi]
        sulc = load_mesh(hemi, "sulc")[0]
        for i, view in enumerate(views):
            ax = fig.add_subplot(grid[i, j])
            draw_view(ax, coords, faces, sulc, maps[hemi], view, colour_map, norm)
            if i == 0:
                ax.set_title(HEMI_NAMES[hemi], fontsize=10)
            if j == 0:
                ax.text(-0.02, 0.5, view, transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=10)
    cax = fig.add_subplot(grid[:, -1])
    sm = plt.cm.ScalarMappable(norm=norm, cmap=colour_map)
    bar = fig.colorbar(sm, cax=cax, extend="both")
    bar.set_label(colorbar_label)
    cax.set_box_aspect(16)
    fig.text(0.5, 1 - 0.12 / fig_h, title, ha="center", va="top", fontsize=12)
    if note:
        fig.text(0.5, 1 - 0.43 / fig_h, note, ha="center", va="top", fontsize=8, color="0.3")
    _save(fig, out)
    plt.close(fig)


#: ROI classes outlined by default: the retinotopic and category-selective ones (streams are too coarse).
OUTLINE_CLASSES = ("prf-visualrois", "floc-bodies", "floc-faces", "floc-places", "floc-words")


def roi_outline_labels(table, classes=OUTLINE_CLASSES) -> np.ndarray:
    """One integer per vertex: its ROI in the first of ``classes`` that labels it (0: none).

    ``table`` has one column per ROI class holding ROI names (a per-vertex score table).
    """
    from ..data.layout import ROI_CLASSES, UNKNOWN

    labels = np.zeros(len(table), dtype=np.int64)
    code = 0
    for cls in classes:
        if cls not in table:
            continue
        names = table[cls].to_numpy()
        for roi in ROI_CLASSES[cls]:
            code += 1
            labels[(labels == 0) & (names == roi) & (names != UNKNOWN)] = code
    return labels


def auto_vmax(values, step: float = 0.05) -> float:
    """A round upper end for a colour scale: the 99th percentile of ``values``, up to a multiple of ``step``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    top = float(np.percentile(v, 99)) if v.size else step
    return max(step, float(np.ceil(top / step - 1e-9) * step))


def shared_vmax(scores_json: str | Path, column: str) -> float | None:
    """One colour scale for every model and subject: the run's 99th percentile of r (from
    ``scores.json``, rounded up), or None for a column that is not r (scores scale per figure)."""
    from ..io import read_json

    if not column.startswith("r_"):
        return None
    p99 = read_json(scores_json).get("r_percentiles", {}).get(column.rsplit("_", 1)[-1], {}).get("p99")
    return auto_vmax([p99]) if p99 is not None else None


def brain_map_figure(
    tables: dict[str, str | Path],
    data_root: str | Path,
    subject: str,
    out: str | Path,
    model: str,
    column: str = "r_val",
    vmax: float | None = None,
    cmap: str = "inferno",
    mesh: str = "infl",
    outline: tuple[str, ...] | list[str] = OUTLINE_CLASSES,
) -> dict:
    """A model's per-vertex scores of one subject on fsaverage5, both hemispheres (PNG and SVG).

    Parameters
    ----------
    tables : {"lh": parquet, "rh": parquet}
        Per-vertex score tables (``results/scores/vertices/<model>/<subject>_<hemi>.parquet``).
    data_root : path
        The data root: each hemisphere's ``all-vertices_fsaverage_space.npy`` places the vertices.
    column : which score to draw: ``r_val`` or ``r_test`` (Pearson r), ``score_val`` or
        ``score_test`` (percent of the noise ceiling).
    vmax : top of the colour scale (bottom: 0); None: the 99th percentile of the drawn values,
        rounded up to 0.05 (r) or 5 (percent).

    Returns
    -------
    dict
        What was drawn: per hemisphere the vertices drawn and in all, and the colour scale.
    """
    import pandas as pd

    from ..data.read import load_fsaverage_vertices

    maps, info = {}, {"model": model, "subject": subject, "column": column, "hemispheres": {}}
    for hemi, path in tables.items():
        table = pd.read_parquet(path)
        if column not in table:
            raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(table.columns)})")
        idx = load_fsaverage_vertices(data_root, subject, hemi)
        labels = roi_outline_labels(table, outline) if outline else None
        maps[hemi] = to_fsaverage5(table[column].to_numpy(), idx, hemi, labels=labels)
        info["hemispheres"][hemi] = {"drawn": maps[hemi].n_drawn, "vertices": maps[hemi].n_total}
    percent = column.startswith("score")
    if vmax is None:
        vmax = auto_vmax(np.concatenate([m.values for m in maps.values()]), 5.0 if percent else 0.05)
    drawn = sum(m.n_drawn for m in maps.values())
    total = sum(m.n_total for m in maps.values())
    split = {"val": "validation split", "test": "test split"}.get(column.rsplit("_", 1)[-1], column)
    what = "noise-normalised score (% of ceiling)" if percent else "Pearson r"
    if drawn == total:
        note = f"all {total:,} challenge vertices lie on fsaverage5 and are drawn"
    else:
        note = (f"{drawn:,} of {total:,} challenge vertices drawn: those on fsaverage5 (one in "
                f"{total / max(drawn, 1):.0f}), an even sample of the measured cortex")
    if outline:
        note += "; white lines: ROI borders"
    plot_brain_map(maps, out, title=f"{model}: {what} per vertex, {subject} ({split})",
                   colorbar_label=f"{what} ({split})", vmin=0.0, vmax=vmax, cmap=cmap, note=note, mesh=mesh)
    info.update(vmin=0.0, vmax=vmax, drawn=drawn, vertices=total)
    return info
