"""The demo generator: deterministic, in the exact layout, NSD-like ceilings, a known ground truth."""

import hashlib

import numpy as np
import pytest
from conftest import TINY

from nsdflow.data.demo import DemoConfig, generate, render_scene
from nsdflow.data.layout import FSAVERAGE5_N_VERTICES, ROI_CLASSES, SubjectPaths
from nsdflow.data.read import (
    list_images,
    load_fsaverage_vertices,
    load_roi_labels,
    load_withheld,
)
from nsdflow.data.validate import validate_subject
from nsdflow.evaluate.scoring import noise_normalized_score, pearson_columns


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic(tiny_demo, tmp_path):
    root, withheld, _ = tiny_demo
    generate(tmp_path / "root", tmp_path / "withheld", TINY)
    assert _digest(tmp_path / "root") == _digest(root)
    assert _digest(tmp_path / "withheld") == _digest(withheld)


def test_seed_changes_images():
    a, _ = render_scene(5, seed=0, size=48)
    b, _ = render_scene(5, seed=1, size=48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)


def test_layout_and_shared_images(tiny_demo):
    root, _, manifest = tiny_demo
    ids = {s: {n.nsd_id for n in list_images(root, s, "train")} for s in manifest["subjects"]}
    shared = set.intersection(*ids.values())
    assert len(shared) == TINY.n_shared
    for s in manifest["subjects"]:
        summary = validate_subject(root, s)
        test_ids = set(summary.test_nsd_ids)
        assert not test_ids & ids[s]


def test_rois_overlap_unknown_and_absent(tiny_demo):
    root, _, manifest = tiny_demo
    absent_somewhere = False
    for s in manifest["subjects"]:
        for hemi in ("lh", "rh"):
            labels = {c: load_roi_labels(root, s, hemi, c) for c in ROI_CLASSES}
            assert ((labels["prf-visualrois"] > 0) & (labels["streams"] > 0)).any()  # classes overlap
            assert (np.stack(list(labels.values())) == 0).all(axis=0).any()  # vertices in no ROI
            fs_vertices = load_fsaverage_vertices(root, s, hemi)
            assert fs_vertices.max() < FSAVERAGE5_N_VERTICES  # drawable on nilearn's fsaverage5
            for c, lab in labels.items():
                assert np.array_equal(load_roi_labels(root, s, hemi, c, "fsaverage")[fs_vertices], lab)
                absent_somewhere |= len(np.unique(lab)) - 1 < len(ROI_CLASSES[c])
            assert 1500 < fs_vertices.size < 4000
    assert absent_somewhere


def test_noise_ceilings_follow_nsd(tiny_demo):
    _, withheld, manifest = tiny_demo
    nc = np.concatenate([load_withheld(withheld, s, h, "noise_ceiling") for s in manifest["subjects"]
                         for h in ("lh", "rh")])
    assert nc.mean() == pytest.approx(0.31, abs=0.01)
    assert np.percentile(nc, [5, 25, 50, 75, 95]) == pytest.approx([0.04, 0.16, 0.29, 0.44, 0.63], abs=0.01)
    assert 0.002 < (nc == 0).mean() < 0.012


def test_ceilings_higher_in_visual_rois(tiny_demo):
    root, withheld, _ = tiny_demo
    nc = load_withheld(withheld, "subj01", "lh", "noise_ceiling")
    prf = load_roi_labels(root, "subj01", "lh", "prf-visualrois") > 0
    none = np.stack([load_roi_labels(root, "subj01", "lh", c) for c in ROI_CLASSES]).max(axis=0) == 0
    assert nc[prf].mean() > nc[none].mean() + 0.1


def test_ground_truth_reaches_the_ceiling(tmp_path):
    """The noiseless signal, scored against the noisy test responses, explains what NC says it can."""
    cfg = DemoConfig(seed=1, n_subjects=1, n_train=12, n_test=300, n_shared=0, image_size=48)
    generate(tmp_path / "root", tmp_path / "withheld", cfg)
    w = tmp_path / "withheld"
    y, signal = load_withheld(w, 1, "lh", "test_fmri"), load_withheld(w, 1, "lh", "test_signal")
    nc = load_withheld(w, 1, "lh", "noise_ceiling")
    r = pearson_columns(y, signal)
    assert np.mean(r**2) == pytest.approx(nc.mean(), abs=0.02)
    assert noise_normalized_score(r, nc).mean() > 85
    shuffled = noise_normalized_score(pearson_columns(y, signal[::-1]), nc).mean()
    assert shuffled < 10
    assert SubjectPaths(tmp_path / "root", 1).fmri("lh").is_file()
