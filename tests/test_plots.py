"""Figures: brain maps put every value on the right fsaverage5 vertex and view; bars and heatmaps draw."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nsdflow.data.layout import (
    FSAVERAGE5_N_VERTICES,
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    ROI_CLASSES,
    UNKNOWN,
)
from nsdflow.data.read import load_fsaverage_vertices, load_roi_labels
from nsdflow.evaluate.summary import summarize
from nsdflow.readouts.regions import region_table
from nsdflow.report.brainmap import (
    OUTLINE_CLASSES,
    auto_vmax,
    brain_map_figure,
    load_mesh,
    outline_segments,
    roi_outline_labels,
    to_fsaverage5,
    visible_faces,
)
from nsdflow.report.plots import plot_model_comparison, plot_roi_bars


def test_challenge_vertices_land_on_their_fsaverage5_vertices(tiny_demo):
    """Challenge-space labels placed through the all-vertices mask equal the fsaverage-space masks."""
    root, _, _ = tiny_demo
    for subject in ("subj01", "subj02"):
        for hemi in HEMISPHERES:
            idx = load_fsaverage_vertices(root, subject, hemi)
            for cls in ROI_CLASSES:
                challenge = load_roi_labels(root, subject, hemi, cls, "challenge")
                fsaverage = load_roi_labels(root, subject, hemi, cls, "fsaverage")
                m = to_fsaverage5(challenge, idx, hemi)
                assert m.n_drawn == m.n_total == challenge.size  # the demo lies on fsaverage5
                drawn = np.isfinite(m.values)
                assert np.array_equal(m.values[drawn], fsaverage[:FSAVERAGE5_N_VERTICES][drawn])
                assert not fsaverage[:FSAVERAGE5_N_VERTICES][~drawn].any()


def test_real_data_draws_only_the_vertices_on_fsaverage5():
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(FSAVERAGE_N_VERTICES, 19_004, replace=False))  # as many as subj01 lh
    values = rng.normal(size=idx.size)
    m = to_fsaverage5(values, idx, "lh")
    on5 = idx < FSAVERAGE5_N_VERTICES
    assert m.n_total == 19_004 and m.n_drawn == on5.sum()
    assert np.array_equal(m.values[idx[on5]], values[on5])
    assert np.isnan(np.delete(m.values, idx[on5])).all()
    with pytest.raises(ValueError, match="5 values for 19004 challenge vertices"):
        to_fsaverage5(values[:5], idx, "lh")


def _visible_share(hemi, view, vertices):
    """Share of a vertex set's faces that a view shows."""
    coords, faces = load_mesh(hemi, "infl")
    order, _, _ = visible_faces(coords, faces, hemi, view)
    inside = np.isin(faces, vertices).all(axis=1)
    return inside[order].sum() / max(inside.sum(), 1)


@pytest.mark.parametrize("hemi", HEMISPHERES)
def test_views_look_at_the_right_side(tiny_demo, hemi):
    """V1 lies on the medial surface, EBA on the lateral, FFA on the ventral one: each view shows its own."""
    root, _, _ = tiny_demo
    idx = load_fsaverage_vertices(root, "subj01", hemi)
    prf = load_roi_labels(root, "subj01", hemi, "prf-visualrois")
    streams = load_roi_labels(root, "subj01", hemi, "streams")
    v1 = idx[(prf == 1) | (prf == 2)]
    lateral_stream = idx[streams == ROI_CLASSES["streams"].index("lateral") + 1]
    ventral_stream = idx[streams == ROI_CLASSES["streams"].index("ventral") + 1]
    assert _visible_share(hemi, "medial", v1) > 2 * _visible_share(hemi, "lateral", v1)
    assert _visible_share(hemi, "lateral", lateral_stream) > 2 * _visible_share(hemi, "medial", lateral_stream)
    assert _visible_share(hemi, "ventral", ventral_stream) > _visible_share(hemi, "lateral", ventral_stream)


def test_outlines_follow_label_borders():
    faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    screen = np.array([[0, 0], [2, 0], [0, 2], [2, 2], [4, 4]], float)
    labels = np.array([1, 1, 2, 2, 2])
    segments = outline_segments(labels, faces, screen)
    # Faces 0 and 1 each cross the border once; face 2 lies in one ROI.
    assert segments.shape == (2, 2, 2)
    assert np.allclose(sorted(map(tuple, segments[0])), [(0.0, 1.0), (1.0, 1.0)])
    assert outline_segments(np.zeros(5, int), faces, screen).shape == (0, 2, 2)


def test_auto_vmax_rounds_up():
    assert auto_vmax([0.1, 0.31]) == pytest.approx(0.35)
    assert auto_vmax([np.nan]) == 0.05
    assert auto_vmax(np.linspace(0, 62, 100), step=5) == 65


def _vertex_table(root, subject, hemi, values):
    table = region_table(root, subject, hemi, list(ROI_CLASSES))
    table["r_val"] = values
    return table


def test_brain_map_png_shows_the_roi_structure(tiny_demo, tmp_path):
    """r = 1 in the retinotopic and category ROIs, 0 outside: red where the ROIs are, blue around them."""
    root, _, _ = tiny_demo
    tables, share = {}, []
    for hemi in HEMISPHERES:
        table = region_table(root, "subj01", hemi, list(ROI_CLASSES))
        inside = roi_outline_labels(table, OUTLINE_CLASSES) > 0
        table["r_val"] = inside.astype(float)
        share.append(inside.mean())
        tables[hemi] = tmp_path / f"{hemi}.parquet"
        table.to_parquet(tables[hemi])
    out = tmp_path / "map.png"
    info = brain_map_figure(tables, root, "subj01", out, "truth", vmax=1.0, cmap="bwr", outline=())
    assert info["drawn"] == info["vertices"] and info["vmax"] == 1.0
    assert out.with_suffix(".svg").stat().st_size > 10_000
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = ((r - g > 60) & (r - b > 60)).sum()
    blue = ((b - r > 60) & (b - g > 60)).sum()
    assert red > 5_000 and blue > 1_000, (red, blue)
    # The ROIs cover most of the demo's measured cortex; so do their pixels.
    assert red / (red + blue) == pytest.approx(np.mean(share), abs=0.2)


def test_brain_map_of_real_layout_says_what_is_drawn(tmp_path, small_root):
    """On a root whose vertices spread over fsaverage, the title note counts the fsaverage5 ones."""
    tables = {}
    for hemi in HEMISPHERES:
        table = region_table(small_root, "subj01", hemi, list(ROI_CLASSES))
        table["r_val"] = np.linspace(-0.2, 0.6, len(table))
        tables[hemi] = tmp_path / f"{hemi}.parquet"
        table.to_parquet(tables[hemi])
    info = brain_map_figure(tables, small_root, "subj01", tmp_path / "m.png", "m", column="r_val")
    idx = {h: load_fsaverage_vertices(small_root, "subj01", h) for h in HEMISPHERES}
    assert info["drawn"] == sum(int((i < FSAVERAGE5_N_VERTICES).sum()) for i in idx.values())
    assert info["vertices"] == 130 and 0 < info["drawn"] < 130
    svg = (tmp_path / "m.svg").read_text()
    assert f"{info['drawn']:,} of 130 challenge vertices drawn" in svg


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(4)
    frames = []
    for model in ("alexnet_ridge", "clip_ridge"):
        for subject in ("subj01", "subj02"):
            for hemi in HEMISPHERES:
                n = 120
                df = pd.DataFrame({"model": model, "subject": subject, "hemi": hemi, "vertex": np.arange(n)})
                for cls, rois in ROI_CLASSES.items():
                    names = np.array([UNKNOWN, *rois[:-1]], dtype=object)  # each class's last ROI absent
                    df[cls] = names[rng.integers(0, len(names), n)]
                df["r_val"] = rng.uniform(-0.2, 0.8, n)
                df["nc"] = rng.uniform(0.05, 0.8, n)
                df["score_val"] = 100 * np.minimum(np.maximum(df["r_val"], 0) ** 2 / df["nc"], 1)
                df["chance_val"] = rng.uniform(0, 5, n)
                frames.append(df)
    return summarize(pd.concat(frames, ignore_index=True))["summary"]


def test_roi_bars(summary, tmp_path):
    out = tmp_path / "bars.png"
    plot_roi_bars(summary, "subj01", "lh", out)
    svg = out.with_suffix(".svg").read_text()
    assert Image.open(out).size[0] > 1500
    for text in ("subj01, left hemisphere", "alexnet_ridge", "clip_ridge", "V1v", "retinotopic", "absent",
                 "median Pearson r (validation split)"):
        assert text in svg, text
    with pytest.raises(ValueError, match="no rows for subj03 lh"):
        plot_roi_bars(summary, "subj03", "lh", out)


def test_model_comparison(summary, tmp_path):
    out = tmp_path / "models.png"
    plot_model_comparison(summary, out)
    svg = out.with_suffix(".svg").read_text()
    for text in ("whole cortex", "noise-normalised score (% of noise ceiling)", "absent", "chance level"):
        assert text in svg, text
    # Without noise ceilings the heatmap shows mean r.
    plot_model_comparison(summary.assign(mean_score=np.nan, chance_score=np.nan), out)
    assert "mean Pearson r" in out.with_suffix(".svg").read_text()
