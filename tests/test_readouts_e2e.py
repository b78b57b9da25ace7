"""Every readout, shared feature sets and designs, a streamed PCA and ensembles, in the DAG end to
end on tests/configs/tiny_readouts.yaml (one demo subject, AlexNet only, 4 regions)."""

import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import yaml
from conftest import REPO, job_counts, nsdflow_env
from conftest import snakemake_log as snakemake

CONFIG = REPO / "tests" / "configs" / "tiny_readouts.yaml"
MODELS = ["ridge_gcv", "ridge_loo", "ridge_kfold", "devkit", "linear", "mlp"]
ENSEMBLES = ["best", "weighted"]


@pytest.fixture(scope="module")
def readouts_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("readouts_run")
    shutil.copy(CONFIG, workdir / "config.yaml")
    snakemake(workdir)
    return workdir


@pytest.mark.e2e
@pytest.mark.slow
def test_every_readout_and_ensemble_is_scored(readouts_run):
    board = pd.read_csv(readouts_run / "results/scores/leaderboard.csv")
    assert set(board["model"]) == set(MODELS + ENSEMBLES)
    assert board["challenge_score"].between(0, 100).all()
    ridge = board.query("model == 'ridge_gcv' and split == 'test'")["mean_r"].iloc[0]
    assert ridge > 0.05  # AlexNet features carry the demo's ground truth even with random weights


@pytest.mark.e2e
@pytest.mark.slow
def test_feature_sets_and_designs_are_computed_once_and_shared(readouts_run):
    designs = sorted(p.relative_to(readouts_run / "results/designs").as_posix()
                     for p in (readouts_run / "results/designs").rglob("*.npz"))
    assert designs == ["alex.features.2-raw-pca10b12/decomposition/subj01.npz",  # devkit
                       "alex.features.5/decomposition-kfold3/subj01.npz",  # ridge_kfold
                       "alex.features.5/decomposition/subj01.npz",  # ridge_gcv and ridge_loo
                       "alex.features.5/matrix/subj01.npz"]  # linear and mlp
    assert (readouts_run / "results/pca/alex.features.2-raw-pca10b12/subj01.npz").is_file()
    fits = readouts_run / "results/readouts"
    assert sorted(p.name for p in (fits / "mlp/subj01/lh").iterdir()) == ["hemisphere.npz"]
    assert sorted(p.stem for p in (fits / "ridge_gcv/subj01/lh").iterdir()) == ["OPA", "PPA", "RSC", "unassigned"]


@pytest.mark.e2e
@pytest.mark.slow
def test_selection_table_says_which_model_won_where(readouts_run):
    table = pd.read_csv(readouts_run / "results/scores/selection.csv")
    assert list(table.columns[:11]) == ["ensemble", "method", "subject", "hemi", "region", "n_vertices", "model",
                                        "r", "weight", "chosen", "selected_on"]
    best = table[table["ensemble"] == "best"]
    assert (best["selected_on"] == "val").all() and best["note"].str.contains("optimistic").all()
    weighted = table[table["ensemble"] == "weighted"]
    assert (weighted["selected_on"] == "oof").all() and not weighted["note"].str.contains("optimistic").any()
    for _, group in best.groupby(["subject", "hemi", "region"]):
        assert group["chosen"].sum() == 1
        assert group.loc[group["chosen"], "r"].iloc[0] == group["r"].max()
        assert set(group["model"]) == {"ridge_gcv", "devkit", "linear", "mlp"}
    weighted = table[table["ensemble"] == "weighted"].groupby(["subject", "hemi", "region"])["weight"].sum()
    assert weighted.round(6).eq(1).all()
    assert (readouts_run / "results/scores/selection.parquet").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_an_ensemble_is_submitted(readouts_run):
    zip_path = readouts_run / "results/submission/submission.zip"
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy"]
    check = subprocess.run([sys.executable, "-m", "nsdflow.cli", "check-submission", str(zip_path), "--data",
                            str(readouts_run / "results/demo/algonauts")], capture_output=True, text=True,
                           env=nsdflow_env())
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_a_fit_parameter_reruns_only_that_models_fits(readouts_run):
    assert "Nothing to be done" in snakemake(readouts_run, "--dry-run")
    config = yaml.safe_load(CONFIG.read_text())
    config["models"]["ridge_loo"]["params"]["alphas"] = [1.0, 10.0]
    (readouts_run / "changed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # same order: same params
    counts = job_counts(snakemake(readouts_run, "--dry-run", configfile="changed.yaml"))
    assert counts["fit"] == 8 and counts["merge"] == 2  # ridge_loo: 4 regions x 2 hemispheres
    assert "design" not in counts and "pca" not in counts  # its decomposition is reused
    assert "ensemble" not in counts  # ridge_loo is in no ensemble
