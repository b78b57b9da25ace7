"""The transformer readout's attention maps: centres on known maps, the table, the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nsdflow.report.attention import attention_centres, attention_figure, attention_table, cell_centres


def _fit(cells: dict[str, list[tuple[int, int]]], grid=(5, 7), n_images=2) -> dict[str, np.ndarray]:
    """A fit's attention arrays whose query q of hemisphere h puts all its weight on cells[h][q] = (row, col)."""
    fit = {}
    for h, where in cells.items():
        maps = np.zeros((n_images, len(where), *grid), np.float32)
        for q, (r, c) in enumerate(where):
            maps[:, q, r, c] = 1.0
        fit[f"{h}.attention"] = maps
        fit[f"{h}.attention_queries"] = np.array([f"{h}:Q{q}" for q in range(len(where))])
        fit[f"{h}.attention_images"] = np.arange(n_images)
    return fit


def test_cell_centres_tile_the_image():
    assert np.allclose(cell_centres(2), [-0.5, 0.5])
    assert np.allclose(cell_centres(3), [-2 / 3, 0, 2 / 3])


def test_centre_of_mass_is_in_image_half_widths_x_right_y_down():
    m = np.zeros((4, 4))
    m[0, 3] = 1.0  # top row, right column: x > 0, y < 0
    assert np.allclose(attention_centres(m), [0.75, -0.75])
    m[3, 3] = 1.0  # and the bottom-right cell, equally: the centre between them
    assert np.allclose(attention_centres(m), [0.75, 0.0])
    batch = np.stack([m, m.T])
    assert attention_centres(batch).shape == (2, 2)
    assert np.allclose(attention_centres(batch)[1], [0.0, 0.75])


def test_table_has_a_row_per_hemisphere_and_query_with_its_centre():
    fit = _fit({"lh": [(0, 0), (4, 6)], "rh": [(2, 3), (0, 6)]})
    table = attention_table(fit)
    assert list(table["hemi"]) == ["lh", "lh", "rh", "rh"]
    assert list(table["query"]) == ["Q0", "Q1", "Q0", "Q1"]
    xs, ys = cell_centres(7), cell_centres(5)
    expected = [(xs[0], ys[0]), (xs[6], ys[4]), (xs[3], ys[2]), (xs[6], ys[0])]
    assert np.allclose(table[["x", "y"]].to_numpy(), expected)
    assert np.allclose(table["spread"], 0) and np.allclose(table["peak"], 1) and (table["images"] == 2).all()


def test_a_fit_without_attention_is_refused_by_hemisphere():
    fit = _fit({"lh": [(0, 0)]})
    with pytest.raises(ValueError, match="no attention maps for rh"):
        attention_table(fit)


def test_figure_is_written_with_its_svg(tmp_path):
    fit = _fit({"lh": [(0, 0), (4, 6)], "rh": [(2, 3), (0, 6)]})
    pixels = {0: np.full((16, 16, 3), 200, np.uint8)}  # image 1 has no pixels: drawn on grey
    table = attention_figure(fit, pixels, tmp_path / "a.png", "demo")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "a.svg").exists()
    assert isinstance(table, pd.DataFrame) and len(table) == 4


def test_hemispheres_with_different_queries_share_columns_by_name(tmp_path):
    fit = _fit({"lh": [(0, 0), (4, 6)], "rh": [(2, 3), (0, 6), (1, 1)]})
    fit["rh.attention_queries"] = np.array(["rh:Q1", "rh:Q2", "rh:Q0"])  # other order, one query lh lacks
    table = attention_figure(fit, {}, tmp_path / "a.png", "demo")
    assert list(table["query"]) == ["Q0", "Q1", "Q1", "Q2", "Q0"]
    assert (tmp_path / "a.png").is_file()


def test_the_command_reads_hemisphere_fits_as_well_as_subject_fits(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nsdflow.report import attention, commands

    both = _fit({"lh": [(0, 0)], "rh": [(2, 3)]})
    np.savez(tmp_path / "subject.npz", **both)
    for h in ("lh", "rh"):  # a hemisphere job's file has no hemisphere prefix
        np.savez(tmp_path / f"{h}.npz", **{k.split(".", 1)[1]: v for k, v in both.items() if k.startswith(h)})
    monkeypatch.setattr(attention, "test_images", lambda root, subject, positions: {})
    for fits, name in ((["subject.npz"], "s"), (["lh.npz", "rh.npz"], "h")):
        a = SimpleNamespace(fits=[str(tmp_path / f) for f in fits], data="root", subject="subj01", model="m",
                            out=str(tmp_path / f"{name}.png"), csv=str(tmp_path / f"{name}.csv"))
        commands.cmd_plot_attention(a)
    assert pd.read_csv(tmp_path / "s.csv").equals(pd.read_csv(tmp_path / "h.csv"))
