"""Per-region selection and ensembles on predictions with a known best model per region."""

import numpy as np
import pytest

from nsdflow.readouts.ensembles import combine, ensemble, region_scores, region_weights


@pytest.fixture
def members():
    """Model ``a`` predicts region R1 well and R2 badly, ``b`` the reverse, ``c`` nothing anywhere."""
    rng = np.random.default_rng(0)
    n, v = 60, 20
    labels = np.array(["R1"] * 8 + ["R2"] * 12)
    y = rng.normal(size=(n, v)).astype(np.float32)
    noise = rng.normal(size=(3, n, v)).astype(np.float32)
    good, bad = y + 0.3 * noise[0], 0.2 * y + noise[1]
    a = np.where(labels == "R1", good, bad)
    b = np.where(labels == "R2", good, bad)
    c = rng.normal(size=(n, v)).astype(np.float32)
    preds = {m: {"val_pred": p, "test_pred": 2 * p} for m, p in zip("abc", (a, b, c))}
    return y, labels, preds


def test_best_picks_the_better_model_per_region(members):
    y, labels, preds = members
    arrays, records = ensemble(["a", "b", "c"], "best", y, preds, labels)
    chosen = {(r["region"], r["model"]) for r in records if r["chosen"]}
    assert chosen == {("R1", "a"), ("R2", "b")}
    np.testing.assert_array_equal(arrays["val_pred"][:, labels == "R1"], preds["a"]["val_pred"][:, labels == "R1"])
    np.testing.assert_array_equal(arrays["test_pred"][:, labels == "R2"], preds["b"]["test_pred"][:, labels == "R2"])
    by_region = {r["region"]: r["n_vertices"] for r in records}
    assert by_region == {"R1": 8, "R2": 12}


def test_mean_and_weighted(members):
    y, labels, preds = members
    arrays, _ = ensemble(["a", "b"], "mean", y, preds, labels)
    np.testing.assert_allclose(arrays["val_pred"], (preds["a"]["val_pred"] + preds["b"]["val_pred"]) / 2, rtol=1e-6)
    scores = region_scores(y, [preds[m]["val_pred"] for m in "abc"], labels, ["R1", "R2"])
    w = region_weights(scores, "weighted")
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    assert w[0, 0] > w[1, 0] and w[1, 1] > w[0, 1]  # the better model weighs more in each region
    np.testing.assert_allclose(w[:, 0], np.maximum(scores[:, 0], 0) / np.maximum(scores[:, 0], 0).sum())
    arrays, _ = ensemble(["a", "b", "c"], "weighted", y, preds, labels)
    expected = combine([preds[m]["test_pred"] for m in "abc"], labels, ["R1", "R2"], w)
    np.testing.assert_allclose(arrays["test_pred"], expected, rtol=1e-6)


def test_weights_fall_back_to_equal_when_no_model_correlates():
    w = region_weights(np.array([[-0.1, np.nan], [-0.2, np.nan]]), "weighted")
    np.testing.assert_array_equal(w[:, 0], [0.5, 0.5])
    np.testing.assert_array_equal(w[:, 1], [0.0, 0.0])  # an absent region gets no weights
    with pytest.raises(ValueError, match="unknown ensemble method 'vote'"):
        region_weights(np.zeros((2, 1)), "vote")


def test_ties_go_to_the_first_listed_model():
    w = region_weights(np.array([[0.3], [0.3]]), "best")
    np.testing.assert_array_equal(w[:, 0], [1.0, 0.0])
