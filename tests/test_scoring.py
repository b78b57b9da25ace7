"""Scores equal an independent per-vertex computation with scipy, and the organisers' rules."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr

from nsdflow.scoring import challenge_score, noise_ceiling_fraction, noise_normalized_score, pearson_columns


def _scipy_r(y, p):
    """The organisers' loop: scipy.stats.pearsonr per vertex. In 2023 (NumPy 1.x) it computed in
    float64 even for float32 arrays; today's scipy keeps float32, so cast to reproduce 2023."""
    return np.array([pearsonr(y[:, v].astype(np.float64), p[:, v].astype(np.float64))[0] for v in range(y.shape[1])])


def test_pearson_equals_scipy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 300)).astype(np.float32)
    p = (0.5 * y + rng.normal(size=y.shape)).astype(np.float32)
    ref = _scipy_r(y, p)
    np.testing.assert_allclose(pearson_columns(y, p), ref, rtol=0, atol=1e-12)


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


def test_noise_ceiling_units():
    frac, unit = noise_ceiling_fraction(np.array([0.0, 0.2, 0.9]))
    assert unit == "fraction" and frac[1] == 0.2
    frac, unit = noise_ceiling_fraction(np.array([0.0, 20.0, 90.0]))
    assert unit == "percent" and frac[1] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="negative"):
        noise_ceiling_fraction(np.array([-1.0]))


def test_score_cli(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 50)).astype(np.float32)
    p = (y + rng.normal(size=y.shape)).astype(np.float32)
    nc = rng.uniform(0, 60, 50).astype(np.float32)  # percent
    for name, arr in (("y", y), ("p", p), ("nc", nc)):
        np.save(tmp_path / f"{name}.npy", arr)
    out = subprocess.run([sys.executable, "-m", "nsdflow.cli", "score", "--pred", str(tmp_path / "p.npy"),
                          "--true", str(tmp_path / "y.npy"), "--noise-ceiling", str(tmp_path / "nc.npy")],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    r = _scipy_r(y, p)
    expected = np.mean(100 * np.minimum(np.maximum(r, 0) ** 2 / (nc.astype(np.float64) / 100.0), 1.0))
    assert result["noise_ceiling_unit"] == "percent"
    assert result["score"] == pytest.approx(expected, rel=1e-12)
    assert result["mean_r"] == pytest.approx(r.mean(), rel=1e-12)
