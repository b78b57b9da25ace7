"""The transformer readout: DETR's positions, the queries of each vertex, the readout's locality and
memory bound, vertex queries tied to ROI queries, learning a planted map, and resuming a killed fit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nsdflow.features.store import ArraySource
from nsdflow.readouts import training
from nsdflow.readouts.transformer import PARAMS
from nsdflow.readouts.transformer_net import (
    BrainDecoder,
    _groups,
    check_params,
    fit_predict,
    query_assignment,
    sine_position_embedding,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests of seconds, not of threads


def _params(**kw):
    p = {k: v.default for k, v in PARAMS.items()}
    p.update({"d_model": 16, "heads": 2, "ffn": 32, "dropout": 0.0, "batch_size": 16, "block": 8, **kw})
    return p


def _tables():
    lh = pd.DataFrame({"streams": ["early", "Unknown", "ventral", "early", "Unknown"],
                       "floc-faces": ["FFA-1", "OFA", "Unknown", "Unknown", "OFA"]})
    rh = pd.DataFrame({"streams": ["Unknown", "lateral", "lateral", "early"]})  # no floc-faces column
    return {"lh": lh, "rh": rh}


# ----------------------------------------------------------------------------- positions, queries


def _detr_sine(height, width, d_model, temperature, normalize):
    """DETR's PositionEmbeddingSine written out element by element (no padding mask)."""
    half, eps, out = d_model // 2, 1e-6, np.zeros((height, width, d_model))
    for i in range(height):
        for j in range(width):
            y, x = i + 1.0, j + 1.0
            if normalize:
                y, x = y / (height + eps) * 2 * math.pi, x / (width + eps) * 2 * math.pi
            for k in range(half):
                dim_t = temperature ** (2 * (k // 2) / half)
                f = math.sin if k % 2 == 0 else math.cos
                out[i, j, k], out[i, j, half + k] = f(y / dim_t), f(x / dim_t)
    return out.reshape(height * width, d_model)


@pytest.mark.parametrize("height,width,d_model,temperature,normalize",
                         [(3, 5, 16, 10000, True), (4, 4, 8, 10000, False), (2, 3, 24, 100, True)])
def test_sine_positions_are_detrs(height, width, d_model, temperature, normalize):
    got = sine_position_embedding(height, width, d_model, temperature, normalize).numpy()
    np.testing.assert_allclose(got, _detr_sine(height, width, d_model, temperature, normalize), atol=1e-5)
    with pytest.raises(ValueError, match="d_model"):
        sine_position_embedding(2, 2, 6)


def test_query_assignment_on_a_hand_made_table():
    owner, names = query_assignment(_tables(), "streams")
    assert names == ["lh:early", "lh:ventral", "lh:other", "rh:early", "rh:lateral", "rh:other"]
    assert owner.tolist() == [0, 2, 1, 0, 2, 5, 4, 4, 3] and owner.dtype == np.int64
    owner, names = query_assignment(_tables(), "floc-faces")  # canonical order: OFA before FFA-1
    assert names == ["lh:OFA", "lh:FFA-1", "lh:other", "rh:other"]
    assert owner.tolist() == [1, 0, 2, 2, 0, 3, 3, 3, 3]
    owner, names = query_assignment({"rh": _tables()["rh"]}, "vertex")
    assert owner.tolist() == [0, 1, 2, 3] and names == ["rh:0", "rh:1", "rh:2", "rh:3"]
    with pytest.raises(ValueError, match="not in the class"):
        query_assignment({"lh": pd.DataFrame({"streams": ["V1v"]})}, "streams")
    with pytest.raises(ValueError, match="hemispheres"):
        query_assignment({"left": _tables()["lh"]}, "streams")
    with pytest.raises(ValueError, match="queries"):
        query_assignment(_tables(), "roi")


def test_parameter_checks():
    assert all(p.check(p.default) is None for p in PARAMS.values())
    assert PARAMS["queries"].check("vertex") is None and PARAMS["queries"].check("hemis")
    assert PARAMS["dropout"].check(0) is None and PARAMS["dropout"].check(1)
    with pytest.raises(ValueError, match="heads: must divide d_model"):
        check_params(_params(heads=3))
    with pytest.raises(ValueError, match="Y: must be"):
        fit_predict(ArraySource(np.zeros((4, 2, 2, 2))), np.arange(3), np.zeros((3, 5)), [], np.zeros(4, int), _params())


# ----------------------------------------------------------------------------- the model


def test_vertex_queries_have_no_self_attention_and_a_local_gradient():
    torch.manual_seed(0)
    model = BrainDecoder(np.arange(6), 5, 3, 3, d_model=16, heads=2, ffn=8, layers=2)
    assert model.per_vertex and not any("self_attn" in name for name, _ in model.named_modules())
    with pytest.raises(ValueError, match="self_attention"):
        BrainDecoder(np.arange(6), 5, 3, 3, d_model=16, heads=2, ffn=8, self_attention=True)
    v = 4
    (model(torch.randn(3, 5, 3, 3))[:, v] ** 2).sum().backward()
    for grad in (model.weight.grad, model.bias.grad, model.query_embed.weight.grad):
        per_row = grad.reshape(len(grad), -1).abs().sum(1)
        assert per_row[v] > 0 and torch.all(per_row[np.arange(6) != v] == 0)


def test_vertex_queries_tied_per_roi_are_the_roi_model():
    """Give each vertex query its ROI's embedding and the ROI model's weights: same predictions and
    attention maps as the ROI-query model without self-attention."""
    owner, _ = query_assignment(_tables(), "streams")
    torch.manual_seed(0)
    roi = BrainDecoder(owner, 6, 3, 4, d_model=16, heads=4, ffn=32, layers=2, self_attention=False).eval()
    vertex = BrainDecoder(np.arange(len(owner)), 6, 3, 4, d_model=16, heads=4, ffn=32, layers=2).eval()
    state = roi.state_dict()
    state["query_embed.weight"] = state["query_embed.weight"][torch.as_tensor(owner)]
    vertex.load_state_dict(state)
    x = torch.randn(5, 6, 3, 4)
    with torch.no_grad():
        (p_roi, a_roi), (p_vertex, a_vertex) = roi(x, True), vertex(x, True)
    torch.testing.assert_close(p_vertex, p_roi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a_vertex, a_roi[:, torch.as_tensor(owner)], atol=1e-6, rtol=1e-5)
    assert a_roi.shape == (5, len(set(owner)), 12)
    torch.testing.assert_close(a_roi.sum(-1), torch.ones(5, len(set(owner))))


@pytest.mark.parametrize("layers", [1, 2])
def test_queries_see_each_other_only_from_the_second_layer(layers):
    """The decoder state starts at zero (DETR), so first-layer self-attention adds one vector to
    every query: with one layer, changing a query's embedding changes no other query's vertices."""
    owner = np.array([0, 0, 1, 1, 2])
    torch.manual_seed(0)
    model = BrainDecoder(owner, 6, 3, 3, d_model=16, heads=2, ffn=8, layers=layers).eval()
    x = torch.randn(4, 6, 3, 3)
    with torch.no_grad():
        before = model(x)
        model.query_embed.weight[1] += 1.0
        after = model(x)
    assert not torch.allclose(before[:, 2:4], after[:, 2:4])
    assert torch.equal(before[:, [0, 1, 4]], after[:, [0, 1, 4]]) == (layers == 1)


class _Largest(TorchDispatchMode):
    """The largest tensor any aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numel, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.shape = t.numel(), tuple(t.shape)
        return out


def test_roi_readout_forms_nothing_of_size_vertices_by_width():
    """ROI queries: no intermediate larger than the (V, d) weight itself, where a gather of query
    outputs per vertex would be (B, V, d) and a V x V product V**2."""
    b, n_vertices, d = 4, 3000, 8
    owner = np.random.default_rng(0).integers(0, 5, n_vertices)
    torch.manual_seed(0)
    model = BrainDecoder(owner, 6, 4, 4, d_model=d, heads=2, ffn=16)
    x = torch.randn(b, 6, 4, 4)
    with _Largest() as largest:
        model(x).square().mean().backward()
    assert largest.numel <= n_vertices * d, largest.shape
    with _Largest() as naive:  # the harness sees a per-vertex gather
        (torch.randn(b, 5, d)[:, torch.as_tensor(owner)] * model.weight).sum(-1)
    assert naive.numel == b * n_vertices * d


# ----------------------------------------------------------------------------- training


def _planted(n=240, channels=6, side=4, seed=0):
    """Each ROI's vertices respond to one grid position, each vertex to one channel there."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, channels, side, side)).astype(np.float32)
    owner = np.repeat(np.arange(3), 4)
    where = rng.choice(side * side, 3, replace=False)
    channel = rng.integers(0, channels, len(owner))
    flat = X.reshape(n, channels, -1)
    Y = np.stack([flat[:, channel[v], where[owner[v]]] for v in range(len(owner))], 1)
    Y = (2 * Y + 0.3 * rng.normal(size=Y.shape) + 5).astype(np.float32)
    return X, Y, owner


def _correlations(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


@pytest.mark.parametrize("vertex", [False, True])
def test_learns_a_planted_map(vertex):
    X, Y, owner = _planted()
    owner = np.arange(len(owner)) if vertex else owner
    train, test = np.arange(200), np.arange(200, 240)
    params = _params(lr=1e-2, epochs=12)
    pred, info = fit_predict(ArraySource(X), train, Y[train], test, owner, params)
    shuffled, _ = fit_predict(ArraySource(X), train, np.random.default_rng(1).permutation(Y[train]), test, owner,
                              params)
    r, r0 = _correlations(pred, Y[test]), _correlations(shuffled, Y[test])
    assert np.median(r) > 0.8 and np.median(r) > np.median(r0) + 0.5, (r, r0)
    assert abs(pred.mean() - 5) < 0.5  # predictions are back in the targets' units
    assert info["n_queries"] == len(set(owner)) and 1 <= info["best_epoch"] <= info["epochs"] == 12


class _Counting(ArraySource):
    def __init__(self, array):
        super().__init__(array)
        self.reads = []

    def read(self, rows):
        assert np.all(np.diff(rows) > 0)
        self.reads.append(np.asarray(rows))
        return super().read(rows)


def test_streamed_reads_whole_blocks_and_equals_the_memory_copy_with_or_without_workers():
    X, Y, owner = _planted(n=90)
    train, test = np.arange(3, 80), np.array([85, 81, 85, 2])  # any order, repeats
    params = _params(epochs=2, block=10, batch_size=8)
    kept, info = fit_predict(ArraySource(X), train, Y[train], test, owner, params)
    source = _Counting(X)
    streamed, info_s = fit_predict(source, train, Y[train], test, owner, params, cache_bytes=0)
    assert info["cached"] and not info_s["cached"]
    np.testing.assert_array_equal(streamed, kept)
    np.testing.assert_array_equal(streamed[0], streamed[2])
    assert all(len(np.unique(r // 10)) == 1 for r in source.reads)  # every read within one block
    # per epoch at most one read per block of fit rows and one per block of inner rows
    assert len(source.reads) <= 8 + 2 * (8 + 8) + 2
    workers, _ = fit_predict(ArraySource(X), train, Y[train], test, owner, {**params, "num_workers": 2}, cache_bytes=0)
    np.testing.assert_array_equal(workers, kept)


def test_epoch_order_shuffles_blocks_then_rows_within():
    rows = np.array([31, 2, 15, 16, 0, 30, 17, 1, 45])
    groups = _groups(rows, np.arange(len(rows)), 10, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(rows)))
    assert [len(set(rows[g] // 10)) for g in groups] == [1] * 4
    assert [rows[g].tolist() for g in _groups(rows, np.arange(len(rows)), 10)] == [[0, 1, 2], [15, 16, 17], [30, 31],
                                                                                  [45]]


def test_a_killed_fit_resumes_to_the_same_predictions(tmp_path, monkeypatch):
    X, Y, owner = _planted(n=100)
    train, test = np.arange(80), np.arange(80, 100)
    params = _params(epochs=4, dropout=0.1, lr=1e-3)
    whole, _ = fit_predict(ArraySource(X), train, Y[train], test, owner, params)

    save = training.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after the second epoch's checkpoint

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        fit_predict(ArraySource(X), train, Y[train], test, owner, params, checkpoint=ckpt, key="k")
    monkeypatch.setattr(training, "save_checkpoint", save)
    resumed, info = fit_predict(ArraySource(X), train, Y[train], test, owner, params, checkpoint=ckpt, key="k")
    assert info["resumed_from"] == 2 and info["epochs"] == 4
    np.testing.assert_array_equal(resumed, whole)
