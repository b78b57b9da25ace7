"""check-submission accepts a good zip and rejects each kind of bad zip with its own message."""

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import nsdflow_env, write_subject

from nsdflow.submission.archive import assemble_submission, check_submission


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
            if isinstance(arr, bytes):  # raw bytes: an entry that is not an .npy file at all
                zf.writestr(name, arr)
                continue
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=True)
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


def _garbage(e):
    out = dict(e)
    out["subj01/lh_pred_test.npy"] = b"this is not an npy file"
    return out


def _pickled(e):
    out = dict(e)
    out["subj01/lh_pred_test.npy"] = np.array([{"a": 1}] * 4, dtype=object)
    return out


BAD_ZIPS = {
    "parent folder": (lambda e: {k.replace("subj", "submission/subj"): v for k, v in e.items()},
                      "files are inside a parent folder (submission/...)"),
    "one file missing": (lambda e: {k: v for k, v in e.items() if k != "subj02/rh_pred_test.npy"},
                         "subj02/rh_pred_test.npy: missing (subj02 has the other hemisphere)"),
    "subject missing": (lambda e: {k: v for k, v in e.items() if not k.startswith("subj02")},
                        "subj02: missing from the zip; the data root has it, so both subj02/lh_pred_test.npy and "
                        "subj02/rh_pred_test.npy are required"),
    "float64": (lambda e: {**e, "subj01/lh_pred_test.npy": e["subj01/lh_pred_test.npy"].astype(np.float64)},
                "subj01/lh_pred_test.npy: dtype float64, must be float32"),
    "float16": (lambda e: {**e, "subj01/lh_pred_test.npy": e["subj01/lh_pred_test.npy"].astype(np.float16)},
                "subj01/lh_pred_test.npy: dtype float16, must be float32"),
    "wrong vertex count": (lambda e: {**e, "subj01/rh_pred_test.npy": e["subj01/rh_pred_test.npy"][:, :-1]},
                           "subj01/rh_pred_test.npy: shape (4, 34), expected (4, 35) (4 test images x 35 rh vertices)"),
    "wrong image count": (lambda e: {**e, "subj01/rh_pred_test.npy": e["subj01/rh_pred_test.npy"][:3]},
                          "subj01/rh_pred_test.npy: shape (3, 35), expected (4, 35)"),
    "transposed": (lambda e: {**e, "subj02/lh_pred_test.npy": e["subj02/lh_pred_test.npy"].T.copy()},
                   "subj02/lh_pred_test.npy: shape (31, 3), expected (3, 31) (3 test images x 31 lh vertices) "
                   "(transposed?)"),
    "one-dimensional": (lambda e: {**e, "subj02/lh_pred_test.npy": e["subj02/lh_pred_test.npy"].ravel()},
                        "subj02/lh_pred_test.npy: shape (93,), expected (3, 31)"),
    "NaN": (lambda e: {**e, "subj02/lh_pred_test.npy": np.where(np.eye(3, 31) > 0, np.nan, 0).astype(np.float32)},
            "subj02/lh_pred_test.npy: 3 values are NaN or inf"),
    "inf": (lambda e: {**e, "subj01/rh_pred_test.npy": np.full((4, 35), np.inf, np.float32)},
            "subj01/rh_pred_test.npy: 140 values are NaN or inf"),
    "unreadable entry": (_garbage, "subj01/lh_pred_test.npy: not a readable .npy array"),
    "pickled objects": (_pickled, "subj01/lh_pred_test.npy: not a readable .npy array (ValueError: Object arrays "
                                  "cannot be loaded when allow_pickle=False)"),
    "extra subject": (lambda e: {**e, "subj05/lh_pred_test.npy": np.zeros((2, 2), np.float32)},
                      "subjects not in the data root: subj05"),
    "empty": (lambda e: {}, "subj01: missing from the zip"),
}


@pytest.mark.parametrize("kind", list(BAD_ZIPS))
def test_bad_submissions(root, tmp_path, kind):
    mutate, message = BAD_ZIPS[kind]
    path = write_zip(tmp_path / "bad.zip", mutate(entries(good_predictions())))
    report = check_submission(path, root)
    assert not report.ok
    assert any(message in e for e in report.errors), str(report)


def test_each_kind_has_its_own_message(root, tmp_path):
    """No two kinds of bad zip are reported with the same first error."""
    firsts = {}
    for kind, (mutate, _) in BAD_ZIPS.items():
        report = check_submission(write_zip(tmp_path / f"{len(firsts)}.zip", mutate(entries(good_predictions()))), root)
        firsts[kind] = report.errors[0]
    assert len(set(firsts.values())) == len(firsts), firsts


def test_duplicate_entry(root, tmp_path):
    path = write_zip(tmp_path / "dup.zip", entries(good_predictions()))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as zf:
        buf = io.BytesIO()
        np.save(buf, good_predictions()[("subj01", "lh")])
        zf.writestr("subj01/lh_pred_test.npy", buf.getvalue())
    report = check_submission(path, root)
    assert "subj01/lh_pred_test.npy: appears 2 times in the zip; keep one" in report.errors


def test_stray_files_are_noted_not_rejected(root, tmp_path):
    path = write_zip(tmp_path / "s.zip", {**entries(good_predictions()), "__MACOSX/._subj01": np.zeros(1, np.float32)})
    report = check_submission(path, root)
    assert report.ok, str(report)
    assert "ignored files (not subjXX/{lh,rh}_pred_test.npy): __MACOSX/._subj01" in str(report)
    assert "MB zipped" in str(report)


def test_not_a_zip_and_too_large(root, tmp_path, monkeypatch):
    (tmp_path / "x.zip").write_text("hello")
    assert "not a zip file" in str(check_submission(tmp_path / "x.zip", root))
    monkeypatch.setattr("nsdflow.submission.archive.MAX_BYTES", 10)
    path = write_zip(tmp_path / "big.zip", entries(good_predictions()))
    assert "over the 300 MB limit" in str(check_submission(path, root))


def test_cli_exit_codes(root, tmp_path):
    good = tmp_path / "good.zip"
    assemble_submission(good_predictions(), good)
    bad = write_zip(tmp_path / "bad.zip", {k: v for k, v in entries(good_predictions()).items() if "subj01/lh" not in k})
    out = tmp_path / "check.txt"
    run = lambda z: subprocess.run([sys.executable, "-m", "nsdflow.cli", "check-submission", str(z), "--data",  # noqa: E731
                                    str(root), "--out", str(out)], capture_output=True, text=True, env=nsdflow_env())
    ok = run(good)
    assert ok.returncode == 0 and "submission OK" in ok.stdout
    assert "submission OK" in out.read_text()
    ko = run(bad)
    assert ko.returncode == 1 and "subj01/lh_pred_test.npy: missing" in ko.stdout and "REJECTED" in ko.stdout
    assert "would be rejected: 1 problems" in ko.stderr
    assert not out.exists()  # a failed check leaves no report that looks like a pass
