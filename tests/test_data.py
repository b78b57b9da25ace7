"""The reader against the Algonauts contract: valid roots pass, each kind of fault names its file."""

import numpy as np
import pytest
from conftest import write_subject

from nsdflow.data.layout import REAL_COUNTS, SubjectPaths
from nsdflow.data.read import (
    DataError,
    list_images,
    list_subjects,
    load_roi_mapping,
    roi_membership,
)
from nsdflow.data.validate import validate_subject


def test_valid_root(small_root):
    s = validate_subject(small_root, 1)
    assert (s.n_train, s.n_test, s.n_vertices) == (20, 5, {"lh": 60, "rh": 70})
    assert s.train_nsd_ids == list(range(1, 21))
    assert s.rois["lh"]["floc-places"] == ["OPA", "PPA", "RSC"]


def test_real_counts_all_subjects(tmp_path):
    """Every subject at its real size (sparse zero fMRI, empty image files) passes with its real counts."""
    for subject, c in REAL_COUNTS.items():
        write_subject(tmp_path, subject, c["train"], c["test"], {"lh": c["lh"], "rh": c["rh"]},
                      sparse=True)
    assert list_subjects(tmp_path) == list(REAL_COUNTS)
    for subject, c in REAL_COUNTS.items():
        s = validate_subject(tmp_path, subject, check_finite=False)
        assert (s.n_train, s.n_test) == (c["train"], c["test"])
        assert s.n_vertices == {"lh": c["lh"], "rh": c["rh"]}


def _problems(root, subject="subj01", **kw):
    with pytest.raises(DataError) as info:
        validate_subject(root, subject, **kw)
    return str(info.value)


def test_missing_root_and_subject(tmp_path, small_root):
    assert "does not exist" in _problems(tmp_path / "nowhere")
    msg = _problems(small_root, "subj02")
    assert "subj02" in msg and "subject folder is missing" in msg and "subj01" in msg


def test_missing_hemisphere_file(small_root):
    p = SubjectPaths(small_root, 1)
    p.fmri("rh").unlink()
    msg = _problems(small_root)
    assert "rh_training_fmri.npy: file is missing" in msg


def test_rows_do_not_match_images(small_root):
    p = SubjectPaths(small_root, 1)
    np.save(p.fmri("lh"), np.zeros((19, 60), np.float32))
    assert "has 19 rows but there are 20 training images" in _problems(small_root)


def test_dtype_and_ndim(small_root):
    p = SubjectPaths(small_root, 1)
    np.save(p.fmri("lh"), np.zeros((20, 60), np.float64))
    np.save(p.fmri("rh"), np.zeros((20, 70, 1), np.float32))
    msg = _problems(small_root)
    assert "lh_training_fmri.npy: fMRI must be float32, is float64" in msg
    assert "rh_training_fmri.npy: fMRI must be 2-D" in msg


def test_nonfinite_vertices_named(small_root):
    p = SubjectPaths(small_root, 1)
    a = np.load(p.fmri("lh"))
    a[3, 7] = np.nan
    a[5, 11] = np.inf
    np.save(p.fmri("lh"), a)
    msg = _problems(small_root)
    assert "NaN or inf in 2 vertices (columns 7, 11)" in msg


def test_bad_image_names(small_root):
    p = SubjectPaths(small_root, 1)
    folder = p.images_dir("train")
    (folder / "train-0003_nsd-00003.png").unlink()
    (folder / "train-0021_nsd-00099.png").touch()  # keeps 20 files, index 3 missing
    (folder / "train-0005_nsd-00777.png").touch()  # index 5 twice
    (folder / "IMG_1234.png").touch()
    msg = _problems(small_root)
    assert "IMG_1234.png" in msg and "does not match" in msg
    assert "image index repeated: 5" in msg
    assert "image index missing (indices must run 1..N): 3" in msg


def test_duplicate_nsd_id(small_root):
    folder = SubjectPaths(small_root, 1).images_dir("test")
    (folder / "test-0005_nsd-60005.png").rename(folder / "test-0005_nsd-60001.png")
    assert "NSD id appears more than once: 60001" in _problems(small_root)


def test_mapping_missing_and_unknown_labels(small_root):
    p = SubjectPaths(small_root, 1)
    p.mapping("floc-words").unlink()
    labels = np.load(p.roi_mask("lh", "floc-faces"))
    labels[0] = 42
    np.save(p.roi_mask("lh", "floc-faces"), labels)
    msg = _problems(small_root)
    assert "mapping_floc-words.npy: mapping file of ROI class 'floc-words' is missing" in msg
    assert "lh.floc-faces_challenge_space.npy: labels [42] are not in mapping_floc-faces.npy" in msg


def test_mask_length_mismatch(small_root):
    p = SubjectPaths(small_root, 1)
    np.save(p.roi_mask("rh", "streams"), np.zeros(69, np.int32))
    assert "rh.streams_challenge_space.npy: has 69 vertices but the fMRI has 70 columns" in _problems(small_root)


def test_all_problems_reported_at_once(small_root):
    p = SubjectPaths(small_root, 1)
    p.fmri("rh").unlink()
    p.mapping("streams").unlink()
    err = pytest.raises(DataError, validate_subject, small_root, 1).value
    assert len(err.problems) >= 2


def test_lookup_by_name(small_root):
    labels, mapping = roi_membership(small_root, "subj01", "lh", "prf-visualrois")
    assert mapping[0] == "Unknown" and mapping[7] == "hV4"
    assert load_roi_mapping(small_root, 1, "streams")[1] == "early"
    assert [n.index for n in list_images(small_root, 1, "test")] == [1, 2, 3, 4, 5]


def test_demo_root_is_valid(tiny_demo):
    root, _, manifest = tiny_demo
    for subject in manifest["subjects"]:
        s = validate_subject(root, subject)
        assert s.n_train == 24 and s.n_test == 6
