"""check-submission accepts a good zip and rejects each kind of bad zip with its own message."""

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import nsdflow_env, write_subject
from nsdflow.submission import assemble_submission, check_submission


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "data"
    write_subject(r, "subj01", 10, 4, {"lh": 30, "rh": 35})
    write_subject(r, "subj02", 10, 3, {"lh": 31, "rh": 36})
    return r


def good_predictions():
    rng = np.random.default_rng(0)
    shapes = {("subj01", "lh"): (4, 30), ("subj01", "rh"): (4, 35), ("subj02", "lh"): (3, 31), ("subj02", "rh"): (3, 36)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def write_zip(path, entries: dict[str, np.ndarray]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in entries.items():
            buf = io.BytesIO()
            np.save(buf, arr)
            zf.writestr(name, buf.getvalue())
    return path


def entries(preds, prefix=""):
    return {f"{prefix}{s}/{h}_pred_test.npy": a for (s, h), a in preds.items()}


def test_good_submission(root, tmp_path):
    assemble_submission(good_predictions(), tmp_path / "sub.zip")
    report = check_submission(tmp_path / "sub.zip", root)
    assert report.ok, str(report)
    assert "partial submission: subj03, subj04, subj05, subj06, subj07, subj08 missing" in str(report)
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        assert sorted(zf.namelist())[0] == "subj01/lh_pred_test.npy"


@pytest.mark.parametrize("mutate, message", [
    (lambda e: {k.replace("subj", "submission/subj"): v for k, v in e.items()}, "inside a parent folder (submission/...)"),
    (lambda e: {k: v for k, v in e.items() if k != "subj02/rh_pred_test.npy"}, "subj02/rh_pred_test.npy: missing"),
    (lambda e: {**e, "subj01/lh_pred_test.npy": e["subj01/lh_pred_test.npy"].astype(np.float64)},
     "subj01/lh_pred_test.npy: dtype float64, must be float32"),
    (lambda e: {**e, "subj01/rh_pred_test.npy": e["subj01/rh_pred_test.npy"][:, :-1]},
     "subj01/rh_pred_test.npy: shape (4, 34), expected (4, 35)"),
    (lambda e: {**e, "subj02/lh_pred_test.npy": e["subj02/lh_pred_test.npy"].T.copy()},
     "subj02/lh_pred_test.npy: shape (31, 3), expected (3, 31)"),
    (lambda e: {**e, "subj02/lh_pred_test.npy": np.where(np.eye(3, 31) > 0, np.nan, 0).astype(np.float32)},
     "subj02/lh_pred_test.npy: 3 values are NaN or inf"),
    (lambda e: {**e, "subj05/lh_pred_test.npy": np.zeros((2, 2), np.float32)}, "subjects not in the data root: subj05"),
])
def test_bad_submissions(root, tmp_path, mutate, message):
    path = write_zip(tmp_path / "bad.zip", mutate(entries(good_predictions())))
    report = check_submission(path, root)
    assert not report.ok
    assert any(message in e for e in report.errors), str(report)


def test_not_a_zip_and_too_large(root, tmp_path, monkeypatch):
    (tmp_path / "x.zip").write_text("hello")
    assert "not a zip file" in str(check_submission(tmp_path / "x.zip", root))
    monkeypatch.setattr("nsdflow.submission.MAX_BYTES", 10)
    path = write_zip(tmp_path / "big.zip", entries(good_predictions()))
    assert "over the 300 MB limit" in str(check_submission(path, root))


def test_cli_exit_codes(root, tmp_path):
    good = tmp_path / "good.zip"
    assemble_submission(good_predictions(), good)
    bad = write_zip(tmp_path / "bad.zip", {})
    run = lambda z: subprocess.run([sys.executable, "-m", "nsdflow.cli", "check-submission", str(z), "--data", str(root)],  # noqa: E731
                                   capture_output=True, text=True, env=nsdflow_env())
    ok, ko = run(good), run(bad)
    assert ok.returncode == 0 and "submission OK" in ok.stdout
    assert ko.returncode == 1 and "subj01/lh_pred_test.npy: missing" in ko.stdout and "REJECTED" in ko.stdout
