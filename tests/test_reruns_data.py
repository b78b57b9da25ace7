"""A real data root: copying or touching it reruns nothing; changing its content reruns what follows.

The small files (ROI masks, mappings) are Snakemake inputs, which it checksums; the fMRI and the
image folders enter through the ``data_fingerprint`` param of ``validate_data``
(nsdflow.workflow). The DAG test validates a small synthetic root for real and marks the
rest of the run done with ``--touch`` over empty outputs.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, snakemake_log, write_subject
from nsdflow.layout import SubjectPaths
from nsdflow.workflow import CHECKSUM_MAX_BYTES, data_fingerprint, data_inputs, file_fingerprint, make_plan


def plan_for(root: Path, classes=("floc-places",)):
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["data"] = {"root": str(root), "check_images": False}  # write_subject's images are empty files
    config["regions"] = {"classes": list(classes)}
    return make_plan(config), config


def later(path: Path, seconds: float = 60) -> None:
    t = time.time() + seconds
    os.utime(path, (t, t))


def test_touching_keeps_the_fingerprint_and_a_change_shows(small_root):
    plan, _ = plan_for(small_root)
    p = SubjectPaths(small_root, "subj01")
    rng = np.random.default_rng(0)
    np.save(p.fmri("lh"), rng.standard_normal((20, 20_000)).astype(np.float32))  # 1.6 MB: over the checksum size
    before = data_fingerprint(plan, "subj01")
    for path in small_root.rglob("*"):
        later(path)
    assert data_fingerprint(plan, "subj01") == before

    # The same shape with other values: what a new release of the data looks like.
    fmri = np.load(p.fmri("lh"))
    np.save(p.fmri("lh"), fmri + 1)
    changed = data_fingerprint(plan, "subj01")
    assert changed != before
    # One more training image (the names are read, not the pixels or the times).
    (p.images_dir("train") / "train-0021_nsd-00099.png").write_bytes(b"x")
    assert data_fingerprint(plan, "subj01") != changed


def test_file_fingerprint_samples_large_files(tmp_path):
    big = tmp_path / "big.npy"
    data = np.zeros(3_000_000, np.uint8)
    big.write_bytes(data.tobytes())
    before = file_fingerprint(big)
    data[-1] = 1  # the last block is always read
    big.write_bytes(data.tobytes())
    assert file_fingerprint(big) != before
    big.write_bytes(data.tobytes() + b"\0")  # and the size
    assert file_fingerprint(big) != before


def test_data_inputs_are_the_small_files(small_root):
    plan, _ = plan_for(small_root)
    p = SubjectPaths(small_root, "subj01")
    np.lib.format.open_memmap(p.fmri("rh"), mode="w+", dtype=np.float32, shape=(20, 20_000)).flush()  # 1.6 MB
    inputs = data_inputs(plan, "subj01")
    assert str(p.fmri("lh")) in inputs and str(p.fmri("rh")) not in inputs
    assert all(Path(f).stat().st_size <= CHECKSUM_MAX_BYTES for f in inputs)
    assert str(p.roi_mask("lh", "floc-places")) in inputs and str(p.mapping("streams")) in inputs


# ----------------------------------------------------------------------------- the DAG


def snakemake(workdir: Path, *args: str) -> str:
    return snakemake_log(workdir, "--replace-workflow-config", "--cores", "1", *args)


def dry_run_rules(workdir: Path) -> Counter:
    out = snakemake(workdir, "--dry-run")
    return Counter(line.split()[-1].rstrip(":") for line in out.splitlines()
                   if line.startswith(("rule ", "localrule ")))


@pytest.mark.e2e
def test_real_root_touched_reruns_nothing_changed_reruns_its_subject(tmp_path):
    root = tmp_path / "root"
    write_subject(root, "subj01", 20, 5, {"lh": 60, "rh": 70})
    # subj02's rh fMRI is over Snakemake's checksum size: it enters through the fingerprint.
    write_subject(root, "subj02", 20, 5, {"lh": 60, "rh": 13_000}, nsd_offset=100)
    assert SubjectPaths(root, "subj02").fmri("rh").stat().st_size > CHECKSUM_MAX_BYTES
    _, config = plan_for(root)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    # Validate for real (Snakemake records the checksums of its inputs when a job finishes), then
    # mark the rest of the DAG done without running it: empty outputs, then --touch.
    snakemake(run, "--until", "validate_data")
    for line in snakemake(run, "--dry-run").splitlines():
        if line.strip().startswith("output: "):
            for f in line.strip()[len("output: "):].split(", "):
                (run / f).parent.mkdir(parents=True, exist_ok=True)
                (run / f).touch()
    snakemake(run, "--touch")
    assert dry_run_rules(run) == Counter()

    # A copy of the data root with new times (cp without -p, rsync without -t, touch -r...).
    for path in root.rglob("*"):
        later(path)
    assert dry_run_rules(run) == Counter()

    # New values in one subject's (large) fMRI: that subject is validated again, and what follows.
    p = SubjectPaths(root, "subj02")
    np.save(p.fmri("rh"), np.load(p.fmri("rh")) * 2)
    jobs = dry_run_rules(run)
    assert jobs["validate_data"] == 1 and jobs["extract"] == 2 and jobs["fit"] > 0, jobs
