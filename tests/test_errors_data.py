"""Bad data roots: each mistake a researcher makes gets a message naming the file and what to do.

tests/test_data.py pins the reader's contract (counts, names, masks); this file covers the ways a
real download goes wrong: incomplete folders, a root one level off, corrupt or odd images, files
that are not arrays. Every message is checked, not just the exception type.
"""

import subprocess
import sys

import numpy as np
import pytest
from conftest import nsdflow_env, write_subject
from PIL import Image

from nsdflow.data.layout import SubjectPaths
from nsdflow.data.read import DataError, list_subjects
from nsdflow.data.validate import validate_subject, verify_images
from nsdflow.features.images import decode_image


def _problems(root, subject="subj01", **kw):
    with pytest.raises(DataError) as info:
        validate_subject(root, subject, **kw)
    return info.value


def _png(path, mode="RGB", size=(12, 10)):
    rng = np.random.default_rng(0)
    shape = {"RGB": (size[1], size[0], 3), "RGBA": (size[1], size[0], 4), "L": (size[1], size[0]),
             "LA": (size[1], size[0], 2)}[mode]
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


@pytest.fixture
def png_root(tmp_path):
    """A one-subject root whose images are real PNGs."""
    p = write_subject(tmp_path, "subj01", 6, 2, {"lh": 10, "rh": 12})
    for split in ("train", "test"):
        for f in p.images_dir(split).iterdir():
            _png(f)
    return tmp_path


# ----------------------------------------------------------------------------- incomplete folders


@pytest.mark.parametrize("folder, says", [
    ("roi_masks", "roi_masks: folder is missing: the subject needs roi_masks/"),
    ("training_split", "training_split: folder is missing: the subject needs training_split/"),
    ("test_split", "test_split: folder is missing: the subject needs test_split/"),
    ("training_split/training_fmri", "training_fmri: folder is missing"),
])
def test_missing_folder_is_one_problem(small_root, folder, says):
    import shutil

    shutil.rmtree(small_root / "subj01" / folder)
    err = _problems(small_root)
    assert says in str(err)
    assert "is the download complete?" in str(err)
    # One problem for the folder, not one per file it should have held.
    assert len(err.problems) == 1, str(err)


def test_root_one_level_too_deep(small_root):
    with pytest.raises(DataError, match="looks like one subject's folder: point at its parent"):
        list_subjects(small_root / "subj01")


def test_root_one_level_too_high(tmp_path):
    write_subject(tmp_path / "algonauts_2023_challenge_data", "subj01", 4, 2, {"lh": 5, "rh": 5})
    with pytest.raises(DataError, match="one level down: point at .*algonauts_2023_challenge_data"):
        list_subjects(tmp_path)


def test_subject_folders_without_two_digits(tmp_path):
    (tmp_path / "subj1").mkdir()
    with pytest.raises(DataError, match=r"found subj1: subject folders are named subj01 \.\.\. subj08"):
        list_subjects(tmp_path)


def test_plan_reports_the_root_hint(small_root):
    from nsdflow.plan import ConfigError, make_plan

    config = {"data": {"root": str(small_root / "subj01")}, "backbones": {}, "models": {}}
    with pytest.raises(ConfigError, match="data.root: no subjXX folders.*point at its parent"):
        make_plan(config)


# ----------------------------------------------------------------------------- arrays


def test_fmri_not_an_array(small_root):
    SubjectPaths(small_root, 1).fmri("lh").write_text("not numpy")
    assert "lh_training_fmri.npy: not a readable .npy array" in str(_problems(small_root))


def test_pickled_fmri_is_refused(small_root):
    np.save(SubjectPaths(small_root, 1).fmri("lh"), np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "lh_training_fmri.npy: not a readable .npy array" in str(_problems(small_root))


def test_nan_message_says_what_the_organisers_did(small_root):
    p = SubjectPaths(small_root, 1)
    a = np.load(p.fmri("rh"))
    a[:, 4] = np.nan
    np.save(p.fmri("rh"), a)
    msg = str(_problems(small_root))
    assert "NaN or inf in 1 vertices (columns 4)" in msg
    assert "subj06 and subj08" in msg and "data.check_finite: false" in msg


def test_mask_not_1d_and_not_numeric(small_root):
    p = SubjectPaths(small_root, 1)
    np.save(p.roi_mask("lh", "streams"), np.zeros((60, 2), np.int32))
    np.save(p.roi_mask("rh", "streams"), np.array(["V1"] * 70))
    msg = str(_problems(small_root))
    assert "lh.streams_challenge_space.npy: ROI mask must be 1-D, has shape (60, 2)" in msg
    assert "rh.streams_challenge_space.npy: ROI mask must be numeric" in msg


def test_mapping_not_a_dict(small_root):
    np.save(SubjectPaths(small_root, 1).mapping("streams"), np.array([1, 2, 3]))
    assert "mapping_streams.npy: expected a pickled dict {int: name} (np.save of a dict), got an array of shape (3,)" in str(_problems(small_root))


def test_fsaverage_mask_wrong_length(small_root):
    np.save(SubjectPaths(small_root, 1).fsaverage_vertices("lh"), np.ones(10242, np.int32))
    assert "lh.all-vertices_fsaverage_space.npy: expected shape (163842,), got (10242,)" in str(_problems(small_root))


# ----------------------------------------------------------------------------- images


def test_valid_pngs_pass_the_image_check(png_root):
    assert validate_subject(png_root, 1, check_images=True).n_train == 6


def test_truncated_png_is_named(png_root):
    f = SubjectPaths(png_root, 1).images_dir("train") / "train-0002_nsd-00002.png"
    f.write_bytes(f.read_bytes()[:40])
    err = _problems(png_root, check_images=True)
    assert len(err.problems) == 1
    assert "train-0002_nsd-00002.png: corrupt or truncated image" in str(err)
    assert "re-copy it from the original download" in str(err)


def test_corrupt_png_and_non_image_are_named(png_root):
    folder = SubjectPaths(png_root, 1).images_dir("test")
    f = folder / "test-0001_nsd-60001.png"
    data = bytearray(f.read_bytes())
    data[60] ^= 0xFF  # flip a byte inside the image data: the chunk checksum no longer matches
    f.write_bytes(bytes(data))
    (folder / "test-0002_nsd-60002.png").write_text("<html>404 Not Found</html>")
    msg = str(_problems(png_root, check_images=True))
    assert "test-0001_nsd-60001.png: corrupt or truncated image" in msg
    assert "test-0002_nsd-60002.png: corrupt or truncated image (not an image file)" in msg


def test_image_check_can_be_skipped(png_root):
    f = SubjectPaths(png_root, 1).images_dir("train") / "train-0001_nsd-00001.png"
    f.write_bytes(b"")
    assert validate_subject(png_root, 1, check_images=False).n_train == 6


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_grayscale_and_rgba_are_converted_not_refused(tmp_path, mode):
    f = tmp_path / "x.png"
    _png(f, mode)
    assert verify_images([f]) == []
    rgb = decode_image(f)
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    if mode == "L":  # gray becomes equal R, G and B
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_rgba_transparency_composited_on_white(tmp_path):
    f = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(f)  # fully transparent black
    assert (decode_image(f) == 255).all()


def test_palette_and_16_bit_images_decode(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).convert("P").save(p)
    assert decode_image(p).shape == (4, 4, 3)
    g16 = tmp_path / "g16.png"
    Image.fromarray((np.arange(16).reshape(4, 4) * 4000).astype(np.uint16)).save(g16)
    assert decode_image(g16).shape == (4, 4, 3)


def test_decode_names_the_corrupt_file(tmp_path):
    f = tmp_path / "train-0001_nsd-00001.png"
    _png(f)
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(DataError, match="train-0001_nsd-00001.png: cannot decode the image"):
        decode_image(f)


# ----------------------------------------------------------------------------- command line


def test_validate_data_cli_lists_every_problem_and_fails(small_root):
    p = SubjectPaths(small_root, 1)
    p.fmri("rh").unlink()
    p.mapping("streams").unlink()
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "validate-data", "--data", str(small_root)],
                          capture_output=True, text=True, env=nsdflow_env())
    assert proc.returncode == 1
    assert "rh_training_fmri.npy: file is missing" in proc.stderr
    assert "mapping_streams.npy: mapping file of ROI class 'streams' is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
