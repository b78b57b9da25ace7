"""Readouts on data with a known answer, the devkit baseline reproduced, feature sets, the plan's
sharing of feature sets and designs, and the fit job (region and whole-hemisphere units)."""

import copy

import numpy as np
import pytest
import yaml
from conftest import REPO

from nsdflow.io import atomic_write_json, open_npz, save_npz
from nsdflow.plan import ConfigError, make_plan
from nsdflow.readouts.designs import build_design, design_name
from nsdflow.readouts.featuresets import (
    batch_bounds,
    featureset_id,
    featureset_spec,
    fit_pca,
)
from nsdflow.readouts.fit import fit_job
from nsdflow.readouts.linear import RidgeReadout
from nsdflow.readouts.registry import READOUTS, describe_params, get_readout
from nsdflow.readouts.synthetic import write_feature_store
from nsdflow.readouts.targets import read_columns, split_targets


def _subject(tmp_path, n_train=70, n_test=12, d=600, n_val=14, chunk=16, seed=0):
    """A feature store (one layer, float32) and a subject summary + split over its images."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(5000, n_train + n_test, replace=False)
    latent = rng.normal(size=(n_train + n_test, 12))
    X = (latent @ rng.normal(size=(12, d)) + 0.3 * rng.normal(size=(n_train + n_test, d)) + 1).astype(np.float32)
    write_feature_store(tmp_path / "b.zarr", ids, {"L": X}, chunk=chunk)
    summary = {"train_nsd_ids": ids[:n_train].tolist(), "test_nsd_ids": ids[n_train:].tolist()}
    val = np.sort(rng.choice(n_train, n_val, replace=False))
    split = {"fit": np.setdiff1d(np.arange(n_train), val).tolist(), "val": val.tolist()}
    return X, summary, split, {"b": tmp_path / "b.zarr"}


# ----------------------------------------------------------------------------- pca_linear


def test_pca_linear_reproduces_the_devkit(tmp_path):
    """IncrementalPCA (fit rows only, partial_fit in batches) + LinearRegression, run directly."""
    from sklearn.decomposition import IncrementalPCA
    from sklearn.linear_model import LinearRegression

    X, summary, split, stores = _subject(tmp_path)
    rng = np.random.default_rng(1)
    Y = (X @ rng.normal(size=(X.shape[1], 9)) * 0.01 + rng.normal(size=(len(X), 9))).astype(np.float32)
    n_train = len(summary["train_nsd_ids"])
    fit, val = np.asarray(split["fit"]), np.asarray(split["val"])
    spec = featureset_spec(["b/L"], standardize=False, pca={"n_components": 20, "batch_size": 25})
    pca = fit_pca(spec, summary, split, stores, progress=False)
    design = build_design("decomposition", {}, pca["val.X_fit"], pca["val.X_pred"])
    pred, _ = get_readout("pca_linear").fit_predict(design, Y[:n_train][fit], {})

    # The devkit: partial_fit on consecutive batches of the training images (56 fit rows: 25 + 31, as a
    # last batch of 6 < 20 components cannot be partial_fit alone), transform, LinearRegression.
    ipca = IncrementalPCA(n_components=20, batch_size=25)
    ipca.partial_fit(X[fit[:25]])
    ipca.partial_fit(X[fit[25:]])
    reg = LinearRegression().fit(ipca.transform(X[fit]), Y[fit])
    expected = reg.predict(ipca.transform(X[val]))
    np.testing.assert_allclose(pca["val.X_pred"], ipca.transform(X[val]), rtol=1e-4, atol=1e-4)
    assert np.abs(pred - expected).max() <= 1e-4 * np.abs(expected).max()


def test_pca_linear_known_answer():
    """Responses exactly linear in the inputs: ordinary least squares predicts new images exactly."""
    rng = np.random.default_rng(2)
    Z, Zt = rng.normal(size=(200, 10)).astype(np.float32), rng.normal(size=(30, 10)).astype(np.float32)
    W = rng.normal(size=(10, 5)).astype(np.float32)
    design = build_design("decomposition", {}, Z, Zt)
    pred, _ = get_readout("pca_linear").fit_predict(design, Z @ W + 3, {})
    np.testing.assert_allclose(pred, Zt @ W + 3, atol=1e-3)


def test_pca_streams_and_standardizes(tmp_path):
    X, summary, split, stores = _subject(tmp_path, chunk=8)
    spec = featureset_spec(["b/L"], standardize=True, pca={"n_components": 5, "batch_size": 10})
    out = fit_pca(spec, summary, split, stores, progress=False)
    n_train = len(summary["train_nsd_ids"])
    assert out["val.X_fit"].shape == (len(split["fit"]), 5) and out["val.X_pred"].shape == (len(split["val"]), 5)
    assert out["test.X_fit"].shape == (n_train, 5) and out["test.X_pred"].shape == (12, 5)
    # fitted on the fold's fit rows: their components are centred there, the others are not exactly
    np.testing.assert_allclose(out["val.X_fit"].mean(0), 0, atol=1e-3)
    assert 0 < out["test.explained_variance_ratio"].sum() <= 1
    with pytest.raises(ValueError, match="batch_size = 3 is below pca.n_components = 5"):
        fit_pca({**spec, "pca": {"n_components": 5, "batch_size": 3}}, summary, split, stores, progress=False)


def test_batch_bounds_join_a_short_last_batch():
    assert [(s.start, s.stop) for s in batch_bounds(56, 25, min_last=20)] == [(0, 25), (25, 56)]
    assert [(s.start, s.stop) for s in batch_bounds(60, 25, min_last=10)] == [(0, 25), (25, 50), (50, 60)]
    assert [(s.start, s.stop) for s in batch_bounds(10, 25, min_last=20)] == [(0, 10)]


# ----------------------------------------------------------------------------- torch readouts

FAST = {"seed": 0, "batch_size": 32, "weight_decay": 0.0, "step_size": 100, "gamma": 1.0, "standardize_targets": True}


def test_torch_linear_recovers_a_linear_ground_truth(torch_one_thread):
    rng = np.random.default_rng(3)
    X, Xt = rng.normal(size=(512, 16)).astype(np.float32), rng.normal(size=(200, 16)).astype(np.float32)
    W, b = rng.normal(size=(16, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    Y = X @ W + b + 0.01 * rng.normal(size=(512, 4)).astype(np.float32)
    r = get_readout("torch_linear")
    params = r.normalize({**FAST, "lr": 0.05, "epochs": 30, "batch_size": 128})
    pred, _ = r.fit_predict({"X_fit": X, "X_pred": Xt}, Y, params)
    truth = Xt @ W + b
    assert np.abs(pred - truth).max() < 0.02 * np.abs(truth).max()  # recovered to 2 % of the range
    again, _ = r.fit_predict({"X_fit": X, "X_pred": Xt}, Y, params)
    np.testing.assert_array_equal(pred, again)  # seeded and deterministic on the CPU


def test_mlp_learns_a_nonlinear_ground_truth_that_a_linear_readout_misses(torch_one_thread):
    rng = np.random.default_rng(4)
    X, Xt = rng.normal(size=(600, 4)).astype(np.float32), rng.normal(size=(300, 4)).astype(np.float32)

    def f(x):
        return np.column_stack([np.abs(x[:, 0]) + x[:, 1] * x[:, 2], np.maximum(x[:, 3], 0) - np.abs(x[:, 1])])

    Y = (f(X) + 0.05 * rng.normal(size=(600, 2))).astype(np.float32)
    r = get_readout("mlp")
    params = r.normalize({**FAST, "hidden": [64, 64], "residual": True, "dropout": 0.0, "lr": 0.02, "epochs": 30,
                          "batch_size": 64, "patience": 8})
    pred, _ = r.fit_predict({"X_fit": X, "X_pred": Xt}, Y, params)
    truth = f(Xt)
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert (r2 > 0.9).all(), r2
    lin, _ = get_readout("ridge").fit_predict(build_design("decomposition", {}, X, Xt), Y,
                                              get_readout("ridge").normalize({}))
    r2_lin = 1 - ((lin - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert (r2_lin < 0.5).all(), r2_lin
    again, _ = r.fit_predict({"X_fit": X, "X_pred": Xt}, Y, params)
    np.testing.assert_array_equal(pred, again)


def test_mlp_stops_early_on_its_inner_split(torch_one_thread):
    from nsdflow.readouts.torch_models import train

    rng = np.random.default_rng(5)
    X = rng.normal(size=(100, 30)).astype(np.float32)
    Y = rng.normal(size=(100, 3)).astype(np.float32)  # nothing to learn: the inner loss soon rises
    params = get_readout("mlp").normalize({**FAST, "hidden": [128], "lr": 0.01, "epochs": 100, "patience": 3})
    _, info = train("mlp", X, Y, params)
    assert info["epochs"] < 100 and info["epochs"] == info["best_epoch"] + 3


# ----------------------------------------------------------------------------- params and plan


def test_params_are_checked_and_listed():
    with pytest.raises(ValueError, match="alpha: not a parameter of readout 'ridge'"):
        get_readout("ridge").normalize({"alpha": 1})
    with pytest.raises(ValueError, match="cv: must be one of gcv, loo, kfold"):
        get_readout("ridge").normalize({"cv": "kfold5"})
    with pytest.raises(ValueError, match="hidden: must be a non-empty list"):
        get_readout("mlp").normalize({"hidden": []})
    assert get_readout("torch_linear").normalize({})["lr"] == 1e-4
    text = describe_params()
    for name in READOUTS:
        assert name in text and all(key in text for key in get_readout(name).params)


def _config():
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["backbones"]["alex"]["layers"]["features.2"] = {"pool": "full"}
    config["models"] = {
        "a_gcv": {"readout": "ridge", "features": ["alex/features.5"]},
        "a_loo": {"readout": "ridge", "features": ["alex/features.5"], "params": {"cv": "loo", "alphas": [1, 10]}},
        "a_kfold": {"readout": "ridge", "features": ["alex/features.5"], "params": {"cv": "kfold"}},
        "a_mlp": {"readout": "mlp", "features": ["alex/features.5"]},
        "devkit": {"readout": "pca_linear", "features": ["alex/features.2"],
                   "pca": {"n_components": 100, "batch_size": 300}},
        "devkit_ridge": {"readout": "ridge", "features": ["alex/features.2"], "standardize": False,
                         "pca": {"n_components": 100, "batch_size": 300}},
    }
    config["ensembles"] = {"best": {"models": ["a_gcv", "devkit"], "method": "best"}}
    config["submission"] = {"model": "best"}
    return config


def test_plan_shares_feature_sets_and_designs():
    plan = make_plan(_config())
    assert sorted(plan.feature_sets) == ["alex.features.2-raw-pca100b300", "alex.features.5"]
    assert sorted(plan.designs) == [("alex.features.2-raw-pca100b300", "decomposition"),
                                    ("alex.features.5", "decomposition"), ("alex.features.5", "decomposition-kfold5"),
                                    ("alex.features.5", "matrix")]
    # gcv and loo share one decomposition; alphas are fit params, not design params
    assert plan.design_spec("a_gcv") == plan.design_spec("a_loo")
    assert plan.model_design("devkit") == plan.model_design("devkit_ridge") == "decomposition"
    assert plan.fit_units("a_gcv", "lh") == [("lh", r) for r in plan.regions]
    assert plan.fit_units("a_mlp", "rh") == [("rh", "hemisphere")]
    assert plan.fit_threads("a_gcv") == 1 and plan.fit_threads("a_mlp") == 2
    assert plan.fit_backend("a_gcv") == "numpy" and plan.fit_backend("a_mlp") == "auto"  # no torch per region job
    assert plan.scored_models[-1] == "best" and plan.submission_model == "best"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["models"]["devkit"].pop("pca"), "models.devkit: readout pca_linear needs pca"),
    (lambda c: c["models"]["a_gcv"].update(params={"alpha": 3}), "models.a_gcv.params.alpha: not a parameter"),
    (lambda c: c["ensembles"].update(a_gcv={"models": ["a_loo", "devkit"]}), "ensembles.a_gcv: a model has the same"),
    (lambda c: c["ensembles"]["best"].update(models=["a_gcv", "nope"]), "ensembles.best.models: 'nope' not"),
    (lambda c: c.update(submission={"model": "worst"}), "submission.model: 'worst' is not a configured model or "
                                                         "ensemble; models: a_gcv, a_loo"),
])
def test_plan_errors_name_the_key(edit, message):
    config = copy.deepcopy(_config())
    edit(config)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        make_plan(config)


def test_featureset_ids_are_readable_stable_and_short():
    spec = featureset_spec(["clip/image", "clip/blocks.6"], True, None)
    assert featureset_id(spec) == "clip.image+clip.blocks.6"
    assert featureset_id(featureset_spec(["a/features.2"], False, {"n_components": 100, "batch_size": 300})) == \
        "a.features.2-raw-pca100b300"
    long = featureset_spec([f"backbone/blocks.{i}" for i in range(12)], True, None)
    assert len(featureset_id(long)) == 80 and featureset_id(long) == featureset_id(copy.deepcopy(long))
    assert design_name("decomposition", {"decomposition": "svd", "n_folds": 3}) == "decomposition-svd-kfold3"


# ----------------------------------------------------------------------------- fit job


def test_read_columns_equals_fancy_indexing(tmp_path):
    a = np.random.default_rng(0).normal(size=(300, 50)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    cols = np.array([1, 7, 8, 30, 49])
    np.testing.assert_array_equal(read_columns(np.load(tmp_path / "a.npy", mmap_mode="r"), cols, block_rows=64),
                                  a[:, cols])


class RegionByRegionRidge(RidgeReadout):
    """Ridge as a readout that is not separable: fitted one region at a time (the other path of fit_design)."""

    separable = False


def test_fit_job_on_a_hemisphere_equals_its_region_jobs(tmp_path, small_root):
    from nsdflow.readouts.regions import region_table, save_region_table

    rng = np.random.default_rng(6)
    table = region_table(small_root, "subj01", "lh", ["floc-places"])
    save_region_table(table, tmp_path / "regions.npz")
    split = {"fit": list(range(15)), "val": list(range(15, 20))}
    X = rng.normal(size=(20, 7)).astype(np.float32)
    design = {"fit_rows": np.array(split["fit"]), "val_rows": np.array(split["val"]), "n_test": np.array(5)}
    for fold, (Xf, Xp) in {"val": (X[:15], X[15:]), "test": (X, rng.normal(size=(5, 7)).astype(np.float32))}.items():
        for k, v in build_design("decomposition", {}, Xf, Xp).items():
            design[f"{fold}.{k}"] = v
    save_npz(tmp_path / "design.npz", **design)
    atomic_write_json(tmp_path / "split.json", split)
    atomic_write_json(tmp_path / "summary.json", {"subject": "subj01", "n_train": 20, "train_nsd_ids": list(range(20)),
                                                  "test_nsd_ids": list(range(100, 105))})
    spec = {"readout": "ridge", "class": "nsdflow.readouts.linear:RidgeReadout", "params": {"cv": "loo"}}

    def fit(unit, out, **kw):
        fit_job(spec, out, small_root, "subj01", "lh", unit, [tmp_path / "regions.npz"], tmp_path / "summary.json",
                tmp_path / "split.json", design=tmp_path / "design.npz", **kw)

    fit("hemisphere", tmp_path / "all.npz")
    whole = open_npz(tmp_path / "all.npz")
    assert whole["val_pred"].shape == (5, 60) and whole["test_pred"].shape == (5, 60)
    assert whole["oof_pred"].shape == (20, 60)  # ridge's exact leave-one-out, every training image
    spec["class"] = "test_readouts:RegionByRegionRidge"  # the path of a decomposition readout fitted region by region
    fit("hemisphere", tmp_path / "by-region.npz")
    by_region = open_npz(tmp_path / "by-region.npz")
    for key in ("val_pred", "test_pred", "oof_pred"):
        np.testing.assert_allclose(by_region[key], whole[key], rtol=1e-4, atol=1e-5)
    spec["class"] = "nsdflow.readouts.linear:RidgeReadout"
    spec["loo"] = False  # no ensemble reads them: the same fit without them
    fit("hemisphere", tmp_path / "no-loo.npz")
    lean = open_npz(tmp_path / "no-loo.npz")
    assert "oof_pred" not in lean and set(lean) == set(whole) - {"oof_pred"}
    np.testing.assert_array_equal(lean["test_pred"], whole["test_pred"])
    spec["loo"] = True
    names = ["OPA", "PPA", "RSC", "absent", "unassigned"]
    counts = split_targets(small_root, "subj01", "lh", tmp_path / "regions.npz", names, tmp_path / "targets")
    assert counts["absent"] == 0 and sum(counts.values()) == 60
    for region in table["region"].unique():
        fit(region, tmp_path / f"{region}.npz")
        part = open_npz(tmp_path / f"{region}.npz")
        cols = np.searchsorted(whole["vertices"], part["vertices"])
        np.testing.assert_allclose(part["val_pred"], whole["val_pred"][:, cols], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(part["oof_pred"], whole["oof_pred"][:, cols], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(part["val.alpha"], whole["val.alpha"][cols])
        # the same from the region's own fMRI file, as the per-region fit jobs read it
        fit(region, tmp_path / f"{region}-t.npz", targets=tmp_path / "targets" / f"{region}.npy")
        np.testing.assert_array_equal(open_npz(tmp_path / f"{region}-t.npz")["test_pred"], part["test_pred"])


def test_a_ridge_fit_job_imports_nothing_heavy(tmp_path, small_root):
    """Hundreds of fit jobs each start a process: the ridge path must not import torch, pandas, zarr..."""
    import json
    import subprocess
    import sys

    from conftest import nsdflow_env

    from nsdflow.readouts.regions import region_table, save_region_table

    save_region_table(region_table(small_root, "subj01", "lh", ["floc-places"]), tmp_path / "regions.npz")
    rng = np.random.default_rng(7)
    design = {"fit_rows": np.arange(15), "val_rows": np.arange(15, 20), "n_test": np.array(5)}
    for fold, (n_fit, n_pred) in {"val": (15, 5), "test": (20, 5)}.items():
        X = rng.normal(size=(n_fit + n_pred, 6)).astype(np.float32)
        design.update({f"{fold}.{k}": v for k, v in build_design("decomposition", {}, X[:n_fit], X[n_fit:]).items()})
    save_npz(tmp_path / "design.npz", **design)
    atomic_write_json(tmp_path / "split.json", {"fit": list(range(15)), "val": list(range(15, 20))})
    atomic_write_json(tmp_path / "summary.json", {"subject": "subj01", "n_train": 20, "train_nsd_ids": list(range(20)),
                                                  "test_nsd_ids": list(range(100, 105))})
    spec = {"readout": "ridge", "class": "nsdflow.readouts.linear:RidgeReadout", "params": {}}
    args = ["fit", "--spec", json.dumps(spec), "--design", str(tmp_path / "design.npz"), "--data", str(small_root),
            "--subject", "subj01", "--hemi", "lh", "--regions", str(tmp_path / "regions.npz"), "--region", "PPA",
            "--summary", str(tmp_path / "summary.json"), "--split", str(tmp_path / "split.json"),
            "--out", str(tmp_path / "PPA.npz")]
    code = ("import sys; from nsdflow.cli import main; rc = main(sys.argv[1:]); "
            "print([m for m in ('torch', 'pandas', 'zarr', 'sklearn', 'scipy', 'dask') if m in sys.modules]); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=nsdflow_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert open_npz(tmp_path / "PPA.npz")["val_pred"].shape[0] == 5


def loo_reference(U, s, Y, alpha):
    """ridge.loo_block on the whole of Y at given alphas (one per column), U'Y computed here."""
    from nsdflow.readouts import ridge

    Y = np.asarray(Y, np.float32)
    mean = Y.mean(axis=0, dtype=np.float64).astype(np.float32)
    out = np.empty(Y.shape, np.float32)
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), (Y.shape[1],))
    ridge.loo_block(np.asarray(U, np.float32), s, U.T @ (Y - mean), mean, Y, alpha, out)
    return out


@pytest.mark.parametrize("cv", ["gcv", "loo"])
def test_a_fits_own_leave_one_out_predictions_equal_the_standalone_ones(cv):
    """fit_predict(loo_out=) reuses the fit's U'Y, block of targets by block; the same numbers as
    loo_block on its own U'Y at the alphas the fit chose, NaN where an image is interpolated."""
    from nsdflow.readouts import ridge

    rng = np.random.default_rng(5)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    Y = (X @ rng.normal(size=(8, 23)) + 3 * rng.normal(size=(40, 23)) + 7).astype(np.float32)
    dec = ridge.decompose(X - X.mean(axis=0), "svd")
    loo = np.empty_like(Y)
    _, chosen = ridge.fit_predict(dec.U, dec.s, np.zeros((1, dec.s.size), np.float32), Y, [0.1, 10.0, 1e3, 1e5],
                                  cv, block=5, loo_out=loo)
    # several alphas within a block of 5 targets: the one-hot scaling is exercised
    assert any(len(np.unique(chosen[c:c + 5])) > 1 for c in range(0, 23, 5))
    np.testing.assert_allclose(loo, loo_reference(dec.U, dec.s, Y, chosen), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="every row"):
        ridge.fit_predict(dec.U, dec.s, dec.V, Y[:30], [1.0], "gcv", rows=np.arange(30), loo_out=np.empty((30, 23)))
    # ordinary least squares on as many directions as images - 1 interpolates every image: NaN
    Xw = rng.normal(size=(6, 5)).astype(np.float32)
    decw = ridge.decompose(Xw - Xw.mean(axis=0), "svd")
    assert np.isnan(loo_reference(decw.U, decw.s, Y[:6, :2], np.zeros(2))).all()
    interpolated = np.zeros((6, 2), np.float32)
    ridge.fit_predict(decw.U, decw.s, np.zeros((1, decw.s.size), np.float32), Y[:6, :2], [0.0], cv,
                      loo_out=interpolated)
    assert np.isnan(interpolated).all()


def test_loo_predictions_equal_refitting_without_each_image():
    from nsdflow.readouts.ridge import decompose

    rng = np.random.default_rng(3)
    X = rng.normal(size=(25, 6)).astype(np.float32)
    Y = (X @ rng.normal(size=(6, 4)) + rng.normal(size=(25, 4)) + 5).astype(np.float32)
    alphas = np.array([0.0, 0.5, 3.0, 40.0])
    dec = decompose(X - X.mean(axis=0), "svd")
    loo = loo_reference(dec.U, dec.s, Y, alphas)
    for i in range(len(X)):
        keep = np.arange(len(X)) != i
        Xk, Yk = X[keep].astype(np.float64), Y[keep].astype(np.float64)
        mx, my = Xk.mean(axis=0), Yk.mean(axis=0)
        for j, a in enumerate(alphas):
            w = np.linalg.solve((Xk - mx).T @ (Xk - mx) + a * np.eye(6), (Xk - mx).T @ (Yk[:, j] - my[j]))
            assert loo[i, j] == pytest.approx((X[i] - mx) @ w + my[j], rel=1e-3, abs=1e-3)
    # targets sharing an alpha (as per-vertex alphas from a grid do) get their own columns' predictions
    order = [2, 0, 2, 3, 0, 1]
    shared = loo_reference(dec.U, dec.s, Y[:, order], alphas[order])
    np.testing.assert_allclose(shared, loo[:, order], rtol=1e-5, atol=1e-5)
