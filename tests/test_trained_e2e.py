"""The trained readouts in the DAG end to end, on tests/configs/tiny_trained.yaml: the transformer
decoder (both hemispheres in one job), the Gaussian readout, FBNET with its pretraining and shared
PCA, out-of-fold predictions, a model grid and the per-vertex softmax ensemble; and a SIGKILL in
the middle of a training job, which a rerun resumes from its last checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, nsdflow_env, run_snakemake
from nsdflow.io import load_npz, read_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = REPO / "tests" / "configs" / "tiny_trained.yaml"
GRID = [f"levels.{tag}" for tag in ("f0", "f1", "f2", "f01", "f02", "f12", "f012")]
MODELS = ["ridge", "decoder", "gauss", "fbnet", *GRID]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("trained_run")
    shutil.copy(CONFIG, workdir / "config.yaml")
    run_snakemake(workdir)
    return workdir


def test_every_model_of_the_grid_and_every_ensemble_is_scored(trained_run):
    board = pd.read_csv(trained_run / "results/scores/leaderboard.csv")
    assert set(board["model"]) == set(MODELS + ["soup", "levels_mean"])
    assert board["challenge_score"].between(0, 100).all()
    assert (trained_run / "results/readouts/decoder/subj01/both/subject.npz").is_file()  # one job, both hemispheres
    assert (trained_run / "results/pretrain/fbnet/val.pt").is_file() and (trained_run / "results/pretrain/fbnet/test.pt").is_file()
    assert (trained_run / "results/pca/alex.features.12-pca16b32-shared/all.npz").is_file()  # one PCA for every subject
    assert not any((trained_run / "results/checkpoints").rglob("*.pt"))  # a finished fit keeps no resumable state


def test_out_of_fold_predictions_cover_every_training_image(trained_run):
    split = read_json(trained_run / "results/splits/subj01.json")
    for model in ("decoder", "gauss", "ridge"):
        pred = load_npz(trained_run / f"results/predictions/{model}/subj01_lh.npz")
        assert pred["oof_pred"].shape[0] == len(split["fit"]) + len(split["val"])
        assert np.isfinite(pred["oof_pred"]).all()
        if model != "ridge":  # with folds, the validation predictions are the out-of-fold ones
            np.testing.assert_array_equal(pred["val_pred"], pred["oof_pred"][split["val"]])
    fbnet = load_npz(trained_run / "results/predictions/fbnet/subj01_rh.npz")
    assert "oof_pred" not in fbnet  # no cv_folds: its two fits (validation, test) only


def test_grid_mean_is_the_mean_of_its_models(trained_run):
    members = [load_npz(trained_run / f"results/predictions/{m}/subj02_rh.npz")["test_pred"] for m in GRID]
    mean = load_npz(trained_run / "results/predictions/levels_mean/subj02_rh.npz")["test_pred"]
    np.testing.assert_allclose(mean, np.mean(members, axis=0), rtol=1e-5, atol=1e-6)


def test_softmax_weights_are_per_vertex_and_chosen_out_of_fold(trained_run):
    table = pd.read_csv(trained_run / "results/scores/selection.csv")
    soup = table[table["ensemble"] == "soup"]
    assert set(soup["model"]) == {"ridge", "decoder", "gauss", *GRID} and (soup["selected_on"] == "oof").all()
    sums = soup.groupby(["subject", "hemi", "region"])["weight"].sum()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-6)


def test_the_decoder_keeps_its_attention_and_the_gaussian_readout_its_positions(trained_run):
    fit = load_npz(trained_run / "results/readouts/decoder/subj01/both/subject.npz")
    maps, names = fit["lh.attention"], fit["lh.attention_queries"]
    assert maps.ndim == 4 and maps.shape[1] == len(names) and all(n.startswith("lh:") for n in names)
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1.0, rtol=1e-4)  # each query's map sums to 1 over the grid
    pred = load_npz(trained_run / "results/predictions/gauss/subj01_lh.npz")
    assert np.all(np.abs(pred["mu_x"]) <= 1) and np.all(np.abs(pred["mu_y"]) <= 1)


def test_the_attention_maps_are_drawn_with_their_table(trained_run):
    fit = load_npz(trained_run / "results/readouts/decoder/subj01/both/subject.npz")
    table = pd.read_csv(trained_run / "results/plots/attention/decoder/subj01.csv")
    assert list(table["query"]) == [str(q).split(":")[1] for h in ("lh", "rh") for q in fit[f"{h}.attention_queries"]]
    assert table[["x", "y"]].abs().le(1).all().all() and (table["model"] == "decoder").all()
    assert not any((trained_run / "results/plots/attention").glob("gauss*"))  # only transformer models have them
    for ext in ("png", "svg"):
        assert (trained_run / f"results/plots/attention/decoder/subj02.{ext}").stat().st_size > 1000


@pytest.mark.parametrize("rule, output, log", [
    ("fit", "results/readouts/decoder/subj01/both/subject.npz", "logs/fit/decoder/subj01/both/subject.log"),
    ("pretrain", "results/pretrain/fbnet/test.pt", "logs/pretrain/fbnet/test.log"),
])
def test_a_killed_training_job_resumes_from_its_checkpoint(trained_run, tmp_path, rule, output, log):
    """Rerun one training job with more epochs, SIGKILL it (and Snakemake) once its first epoch is
    checkpointed, then rerun: the log says it resumed, and the result equals an uninterrupted run."""
    config = yaml.safe_load(CONFIG.read_text())
    model = "decoder" if rule == "fit" else "fbnet"
    key, epochs = ("epochs", 4) if rule == "fit" else ("pretrain_epochs", 60)  # long enough to be caught
    config["models"][model]["params"][key] = epochs
    runs = {}
    for name in ("killed", "whole"):
        run = tmp_path / name
        shutil.copytree(trained_run, run, symlinks=True)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        runs[name] = run
    run_snakemake(runs["whole"], output, "--cores", "1")

    run = runs["killed"]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(run),
           "--configfile", str(run / "config.yaml"), "--cores", "1", output]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=nsdflow_env(),
                            start_new_session=True)
    checkpoints = run / "results/checkpoints" / model
    deadline = time.monotonic() + 300
    try:
        # a checkpoint, not atomic_path's hidden temporary file (".{name}.XXXX.pt"), which exists
        # from before torch.save starts: killing then leaves nothing to resume from
        while not any(p for p in checkpoints.rglob("*.pt") if not p.name.startswith(".")):
            assert proc.poll() is None, "the job ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run / output).exists() or (run / output).stat().st_mtime < (run / "config.yaml").stat().st_mtime
    run_snakemake(run, "--unlock")
    run_snakemake(run, output, "--rerun-incomplete", "--cores", "1")
    assert "resuming after epoch" in (run / log).read_text()
    if rule == "fit":
        for key in ("lh.test_pred", "rh.oof_pred"):
            np.testing.assert_array_equal(load_npz(run / output)[key], load_npz(runs["whole"] / output)[key])
    else:
        import torch

        a, b = (torch.load(r / output, weights_only=True) for r in (run, runs["whole"]))
        assert all(torch.equal(a[k], b[k]) for k in a)
