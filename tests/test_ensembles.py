"""Ensembles on predictions with a known best model per region and per vertex."""

import numpy as np
import pytest

from nsdflow.readouts.ensembles import (
    combine,
    ensemble,
    pearson_columns,
    region_scores,
    region_weights,
    vertex_weights,
)


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


def _ensemble(members_, method, y, preds, labels, tau=0.025):
    return ensemble(members_, method, y, {m: preds[m]["val_pred"] for m in members_}, preds, labels, tau)


def test_best_picks_the_better_model_per_region(members):
    y, labels, preds = members
    arrays, records = _ensemble(["a", "b", "c"], "best", y, preds, labels)
    chosen = {(r["region"], r["model"]) for r in records if r["chosen"]}
    assert chosen == {("R1", "a"), ("R2", "b")}
    np.testing.assert_array_equal(arrays["val_pred"][:, labels == "R1"], preds["a"]["val_pred"][:, labels == "R1"])
    np.testing.assert_array_equal(arrays["test_pred"][:, labels == "R2"], preds["b"]["test_pred"][:, labels == "R2"])
    by_region = {r["region"]: r["n_vertices"] for r in records}
    assert by_region == {"R1": 8, "R2": 12}


def test_mean_and_weighted(members):
    y, labels, preds = members
    arrays, _ = _ensemble(["a", "b"], "mean", y, preds, labels)
    np.testing.assert_allclose(arrays["val_pred"], (preds["a"]["val_pred"] + preds["b"]["val_pred"]) / 2, rtol=1e-6)
    r = np.stack([pearson_columns(y, preds[m]["val_pred"]) for m in "abc"])
    scores = region_scores(r, labels, ["R1", "R2"])
    w = region_weights(scores, "weighted")
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    assert w[0, 0] > w[1, 0] and w[1, 1] > w[0, 1]  # the better model weighs more in each region
    np.testing.assert_allclose(w[:, 0], np.maximum(scores[:, 0], 0) / np.maximum(scores[:, 0], 0).sum())
    arrays, _ = _ensemble(["a", "b", "c"], "weighted", y, preds, labels)
    per_vertex = w[:, [0 if x == "R1" else 1 for x in labels]]
    np.testing.assert_allclose(arrays["test_pred"], combine([preds[m]["test_pred"] for m in "abc"], per_vertex),
                               rtol=1e-6)


def test_weights_fall_back_to_equal_when_no_model_correlates():
    w = region_weights(np.array([[-0.1, np.nan], [-0.2, np.nan]]), "weighted")
    np.testing.assert_array_equal(w[:, 0], [0.5, 0.5])
    np.testing.assert_array_equal(w[:, 1], [0.0, 0.0])  # an absent region gets no weights
    with pytest.raises(ValueError, match="unknown per-region method 'vote'"):
        region_weights(np.zeros((2, 1)), "vote")


def test_ties_go_to_the_first_listed_model():
    w = region_weights(np.array([[0.3], [0.3]]), "best")
    np.testing.assert_array_equal(w[:, 0], [1.0, 0.0])


def test_softmax_limits_are_the_per_vertex_best_and_the_mean():
    r = np.array([[0.1, 0.5, 0.3], [0.4, 0.2, np.nan], [0.2, 0.2, 0.1]])
    np.testing.assert_allclose(vertex_weights(r, 0.0), [[0, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(vertex_weights(r, 1e-6), vertex_weights(r, 0.0), atol=1e-12)
    np.testing.assert_allclose(vertex_weights(r, 1e6), [[1 / 3, 1 / 3, 0.5], [1 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 0.5]],
                               atol=1e-6)  # the mean of the members that predict the vertex
    w = vertex_weights(r, 0.1)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    np.testing.assert_allclose(w[:, 0], np.exp(r[:, 0] / 0.1) / np.exp(r[:, 0] / 0.1).sum())
    assert w[1, 2] == 0.0  # a member that does not predict a vertex has weight 0 there


def test_softmax_picks_per_vertex_and_a_non_predicting_member_weighs_nothing(members):
    y, labels, preds = members
    preds["c"]["val_pred"] = preds["c"]["val_pred"].copy()
    preds["c"]["val_pred"][:, :4] = np.nan  # c predicts no vertex 0..3
    arrays, records = _ensemble(["a", "b", "c"], "softmax", y, preds, labels, tau=1e-3)
    np.testing.assert_allclose(arrays["val_pred"][:, labels == "R1"], preds["a"]["val_pred"][:, labels == "R1"],
                               rtol=1e-6)
    weights = {(rec["region"], rec["model"]): rec["weight"] for rec in records}
    assert weights[("R1", "a")] == pytest.approx(1.0) and weights[("R2", "b")] == pytest.approx(1.0)
    assert np.isfinite(arrays["val_pred"]).all()
