"""Scores equal an independent per-vertex computation with scipy, and the organisers' rules."""

import json
import logging
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from nsdflow.data.layout import HEMISPHERES, ROI_CLASSES, UNKNOWN, WithheldPaths
from nsdflow.data.read import load_fmri
from nsdflow.evaluate.score import score_hemisphere
from nsdflow.evaluate.scoring import (
    challenge_score,
    noise_ceiling_fraction,
    noise_normalized_score,
    pearson_columns,
)
from nsdflow.evaluate.summary import _stats, load_vertex_tables, summarize
from nsdflow.io import atomic_write_json, save_npz
from nsdflow.readouts.regions import region_table, save_region_table
from nsdflow.readouts.split import make_split


def _scipy_r(y, p):
    """The organisers' loop: scipy.stats.pearsonr per vertex. In 2023 (NumPy 1.x) it computed in
    float64 even for float32 arrays; today's scipy keeps float32, so cast to reproduce 2023."""
    return np.array([pearsonr(y[:, v].astype(np.float64), p[:, v].astype(np.float64))[0] for v in range(y.shape[1])])


def _organisers_vertex_scores(pred, true, noise_ceiling_percent, loop=True):
    """A direct transcription of the Algonauts 2023 scoring of one hemisphere: ``(scores, r)``.

    ``loop``: scipy.stats.pearsonr one vertex at a time, as the organisers did; otherwise one
    call with ``axis=0`` (scipy's vectorised form of the same per-vertex correlation).
    """
    if loop:
        correlation = np.zeros(pred.shape[1])
        for v in range(pred.shape[1]):
            correlation[v] = pearsonr(pred[:, v].astype(np.float64), true[:, v].astype(np.float64))[0]
    else:
        correlation = pearsonr(pred.astype(np.float64), true.astype(np.float64), axis=0)[0]
    r = correlation.copy()
    correlation[correlation < 0] = 0  # negative correlations count as 0
    correlation = correlation ** 2
    noise_ceiling = noise_ceiling_percent.astype(np.float64) / 100  # the released ceilings are in percent
    noise_ceiling[noise_ceiling == 0] = 1e-14
    noise_norm_corr = np.divide(correlation, noise_ceiling)
    noise_norm_corr[noise_norm_corr > 1] = 1
    return noise_norm_corr * 100, r


def test_pearson_equals_scipy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 300)).astype(np.float32)
    p = (0.5 * y + rng.normal(size=y.shape)).astype(np.float32)
    ref = _scipy_r(y, p)
    np.testing.assert_allclose(pearson_columns(y, p), ref, rtol=0, atol=1e-12)


def test_pearson_blocks_do_not_change_a_reported_digit():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 1000)).astype(np.float32)
    p = (y + rng.normal(size=y.shape)).astype(np.float32)
    whole = pearson_columns(y, p, block_bytes=1 << 40)
    for block_bytes in (1, 30 * 8 * 64, 30 * 8 * 333):
        np.testing.assert_allclose(pearson_columns(y, p, block_bytes=block_bytes), whole, rtol=0, atol=1e-14)


def test_pearson_of_20000_vertices_is_fast():
    """Vectorised: 20,544 vertices (subj01 rh) x 159 test images well under a second (about 20 ms)."""
    rng = np.random.default_rng(2)
    y = rng.standard_normal((159, 20_544), dtype=np.float32)
    p = y + rng.standard_normal(y.shape, dtype=np.float32)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        pearson_columns(y, p)
        best = min(best, time.perf_counter() - t0)
    assert best < 0.5, f"{best:.2f} s for 20,544 vertices"


def test_constant_prediction_is_nan_and_scores_zero():
    y = np.random.default_rng(0).normal(size=(10, 2))
    p = y.copy()
    p[:, 1] = 3.0
    r = pearson_columns(y, p)
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1])
    assert noise_normalized_score(r, np.array([0.5, 0.5])).tolist() == [100.0, 0.0]


def test_organisers_rules():
    r = np.array([-0.3, 0.0, 0.2, 0.2, 0.9, 0.1])
    nc = np.array([0.5, 0.0, 0.16, 0.0, 0.5, 0.04])
    # negative r -> 0; r=0 with NC=0 -> 0/1e-14 = 0; 0.04/0.16 = 25; NC 0 -> clipped to 100;
    # 0.81/0.5 clipped to 100; 0.01/0.04 = 25.
    np.testing.assert_allclose(noise_normalized_score(r, nc), [0, 0, 25, 100, 100, 25])
    assert challenge_score([r[:3], r[3:]], [nc[:3], nc[3:]]) == pytest.approx(250 / 6)


def test_noise_ceiling_units(caplog):
    with caplog.at_level(logging.INFO, logger="nsdflow.evaluate.scoring"):
        frac, unit = noise_ceiling_fraction(np.array([0.0, 0.2, 0.9]), "subj01 lh")
        assert unit == "fraction" and frac[1] == 0.2
        frac, unit = noise_ceiling_fraction(np.array([0.0, 20.0, 90.0]), "subj01 rh")
        assert unit == "percent" and frac[1] == pytest.approx(0.2)
    assert "subj01 lh: values up to 0.9, read as fractions" in caplog.text
    assert "subj01 rh: values up to 90, read as percent" in caplog.text
    with pytest.raises(ValueError, match="negative"):
        noise_ceiling_fraction(np.array([-1.0]))
    with pytest.raises(ValueError, match="neither fractions nor percent"):
        noise_ceiling_fraction(np.array([0.5, 250.0]))


def test_score_cli(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 50)).astype(np.float32)
    p = (y + rng.normal(size=y.shape)).astype(np.float32)
    nc = rng.uniform(0, 60, 50).astype(np.float32)  # percent
    nc[:3] = 0
    for name, arr in (("y", y), ("p", p), ("nc", nc)):
        np.save(tmp_path / f"{name}.npy", arr)
    out = subprocess.run([sys.executable, "-m", "nsdflow.cli", "score", "--pred", str(tmp_path / "p.npy"),
                          "--true", str(tmp_path / "y.npy"), "--noise-ceiling", str(tmp_path / "nc.npy")],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    r = _scipy_r(y, p)
    assert result["noise_ceiling_unit"] == "percent"
    assert "read as percent" in out.stderr  # the unit detection is said in the log
    assert result["score"] == pytest.approx(_organisers_vertex_scores(p, y, nc)[0].mean(), rel=1e-12)
    assert result["mean_r"] == pytest.approx(r.mean(), rel=1e-12)


# ----------------------------------------------------------------------------- the whole evaluation


@pytest.fixture(scope="module")
def scored(tiny_demo, tmp_path_factory):
    """Per-vertex tables of two fake models on the tiny demo, scored by the pipeline's own code.

    The withheld noise ceilings (fractions) are rewritten in percent, as some releases give them.
    Returns (vertex tables by (model, subject, hemi), the arrays each was scored on).
    """
    root, withheld, _ = tiny_demo
    base = tmp_path_factory.mktemp("scored")
    held = base / "withheld"
    shutil.copytree(withheld, held)
    rng = np.random.default_rng(5)
    paths, arrays = {}, {}
    for subject in ("subj01", "subj02"):
        fmri_n = load_fmri(root, subject, "lh").shape[0]
        split = make_split(fmri_n, 0.25, 0, subject)
        split_path = base / f"{subject}_split.json"
        atomic_write_json(split_path, split)
        for hemi in HEMISPHERES:
            nc_path = WithheldPaths(held, subject).noise_ceiling(hemi)
            nc_percent = (np.load(nc_path).astype(np.float64) * 100).astype(np.float32)
            np.save(nc_path, nc_percent)
            regions = base / f"{subject}_{hemi}_regions.npz"
            save_region_table(region_table(root, subject, hemi, list(ROI_CLASSES)), regions)
            y_val = np.asarray(load_fmri(root, subject, hemi))[split["val"]]
            y_test = np.load(WithheldPaths(held, subject).test_fmri(hemi))
            for model, noise in (("good", 0.5), ("poor", 3.0)):
                val_pred = (y_val + noise * rng.standard_normal(y_val.shape)).astype(np.float32)
                test_pred = (y_test + noise * rng.standard_normal(y_test.shape)).astype(np.float32)
                val_pred[:, 0] = 1.0  # a constant prediction: r is NaN and counts as 0
                pred = base / f"{model}_{subject}_{hemi}.npz"
                save_npz(pred, val_pred=val_pred, test_pred=test_pred)
                out = base / model / f"{subject}_{hemi}.parquet"
                score_hemisphere(pred, root, held, subject, hemi, regions, split_path, out)
                paths[(model, subject, hemi)] = out
                arrays[(model, subject, hemi)] = {"val": (val_pred, y_val), "test": (test_pred, y_test),
                                                  "nc_percent": nc_percent}
    return paths, arrays


def test_challenge_score_equals_the_organisers_computation(scored):
    """The leaderboard's three aggregations against scipy.stats.pearsonr per vertex on the same arrays."""
    paths, arrays = scored
    vertices = load_vertex_tables(paths)
    vertices.loc[vertices["floc-faces"] == "FFA-2", "floc-faces"] = UNKNOWN  # an ROI absent everywhere
    tables = summarize(vertices)
    board = tables["leaderboard"].set_index(["model", "split"])
    by_sh = tables["by_subject_hemi"].set_index(["model", "split", "subject", "hemi"])
    by_roi = tables["by_roi"].set_index(["model", "split", "roi_class", "roi"])
    labels = {key: {cls: frame[cls].to_numpy() for cls in ROI_CLASSES}
              for key, frame in vertices.groupby(["model", "subject", "hemi"])}
    for model in ("good", "poor"):
        for split in ("val", "test"):
            per_hemi = {}
            for (m, subject, hemi), arr in arrays.items():
                if m == model:
                    pred, true = arr[split]
                    with np.errstate(invalid="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # scipy warns about the constant prediction
                        # The literal per-vertex loop once (seconds); scipy's axis=0 form elsewhere.
                        theirs, r = _organisers_vertex_scores(pred, true, arr["nc_percent"],
                                                            loop=(model, split) == ("good", "test"))
                    # Where a prediction is constant, r is undefined: the organisers' loop gives NaN
                    # (their mean would be NaN); the pipeline counts it as r = 0, score 0.
                    assert np.isnan(theirs).sum() == (split == "val")
                    per_hemi[(subject, hemi)] = (np.nan_to_num(theirs), np.nan_to_num(r))
            # 1. the leaderboard: mean over every vertex of every subject and hemisphere
            every = np.concatenate([s for s, _ in per_hemi.values()])
            r_all = np.concatenate([r for _, r in per_hemi.values()])
            row = board.loc[(model, split)]
            assert row["challenge_score"] == pytest.approx(every.mean(), rel=1e-12)
            assert row["mean_r"] == pytest.approx(r_all.mean(), rel=1e-12, abs=1e-15)
            assert row["median_r"] == pytest.approx(np.median(r_all), rel=1e-12, abs=1e-15)
            assert row["n_vertices"] == every.size
            # 2. per subject x hemisphere
            for (subject, hemi), (s, r) in per_hemi.items():
                got = by_sh.loc[(model, split, subject, hemi)]
                assert got["mean_score"] == pytest.approx(s.mean(), rel=1e-12)
                assert got["median_r"] == pytest.approx(np.median(r), rel=1e-12, abs=1e-15)
            # 3. per ROI, pooled over subjects and hemispheres; NaN for an ROI absent everywhere
            for cls, rois in ROI_CLASSES.items():
                for roi in (*rois, UNKNOWN):
                    pooled = np.concatenate([per_hemi[k][0][labels[(model, *k)][cls] == roi] for k in per_hemi])
                    got = by_roi.loc[(model, split, cls, roi)]
                    assert got["n_vertices"] == pooled.size
                    if pooled.size:
                        assert got["mean_score"] == pytest.approx(pooled.mean(), rel=1e-11)
                    else:
                        assert np.isnan(got["mean_score"]) and np.isnan(got["median_r"])
    absent = tables["by_roi"].query("roi == 'FFA-2'")
    assert (absent["n_vertices"] == 0).all() and absent["mean_score"].isna().all()
    # Tidy: one row per model, split, subject, hemisphere and ROI, no duplicates.
    keys = ["model", "split", "subject", "hemi", "roi_class", "roi"]
    assert not tables["summary"].duplicated(keys).any()


def test_score_hemisphere_logs_the_noise_ceiling_unit(scored, tiny_demo, tmp_path, caplog):
    paths, _ = scored
    table = pd.read_parquet(paths[("good", "subj01", "lh")])
    assert table["nc"].max() <= 1.0  # the percent file was read as percent and stored as fractions
    assert np.isnan(table["r_val"].iloc[0]) and table["score_val"].iloc[0] == 0.0


def _reference_summary(vertices, split, classes):
    """The summary's statistics by plain pandas filtering, one scope and ROI at a time."""
    rows = []
    scopes = [("all", "all", vertices)]
    for subject, f in vertices.groupby("subject"):
        scopes.append((subject, "all", f))
        for hemi, f2 in f.groupby("hemi"):
            scopes.append((subject, hemi, f2))
    for hemi, f in vertices.groupby("hemi"):
        scopes.append(("all", hemi, f))
    for subject, hemi, frame in scopes:
        rows.append({"subject": subject, "hemi": hemi, "roi_class": "all", "roi": "all", **_stats(frame, split)})
        for cls in classes:
            for roi in (*ROI_CLASSES[cls], UNKNOWN):
                sel = frame[frame[cls] == roi] if cls in frame else (frame.iloc[:0] if roi != UNKNOWN else frame)
                rows.append({"subject": subject, "hemi": hemi, "roi_class": cls, "roi": roi, **_stats(sel, split)})
    return pd.DataFrame(rows)


def test_vectorised_summary_equals_a_plain_loop():
    rng = np.random.default_rng(3)
    frames = []
    for subject in ("subj01", "subj02", "subj03"):
        for hemi in HEMISPHERES:
            n = int(rng.integers(40, 90))
            df = pd.DataFrame({"subject": subject, "hemi": hemi, "vertex": np.arange(n)})
            for cls in ("prf-visualrois", "floc-faces"):
                names = np.array([UNKNOWN, *ROI_CLASSES[cls][:-1]], dtype=object)  # the last ROI absent everywhere
                df[cls] = names[rng.integers(0, len(names), n)]
            df["r_val"] = rng.uniform(-0.3, 0.9, n)
            df.loc[df.index[:2], "r_val"] = np.nan
            df["nc"] = rng.uniform(0, 0.8, n)
            df["score_val"] = noise_normalized_score(df["r_val"].to_numpy(), df["nc"].to_numpy())
            df["chance_val"] = rng.uniform(0, 10, n)
            frames.append(df)
    vertices = pd.concat(frames, ignore_index=True).assign(model="m")
    classes = ["prf-visualrois", "floc-faces", "streams"]  # streams: a class the data lacks
    got = summarize(vertices, classes)["summary"]
    ref = _reference_summary(vertices, "val", classes)
    keys = ["subject", "hemi", "roi_class", "roi"]
    merged = ref.merge(got, on=keys, how="outer", suffixes=("_ref", ""), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"][keys]
    for col in ("n_vertices", "mean_r", "median_r", "q25_r", "q75_r", "mean_score", "chance_score", "mean_nc"):
        np.testing.assert_allclose(merged[col].to_numpy(float), merged[f"{col}_ref"].to_numpy(float), rtol=1e-12,
                                   atol=1e-13, err_msg=col)
