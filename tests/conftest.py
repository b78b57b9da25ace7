"""Shared fixtures: a tiny demo dataset and a builder of synthetic data roots."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nsdflow.data.demo import DemoConfig, generate
from nsdflow.data.layout import (
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    ROI_CLASSES,
    SubjectPaths,
    format_image_name,
)

REPO = Path(__file__).resolve().parents[1]

TINY = DemoConfig(seed=3, n_subjects=2, n_train=24, n_test=6, n_shared=8, image_size=48, roi_dropout=0.3)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A generated demo dataset (2 subjects, 24 train / 6 test images): (root, withheld, manifest)."""
    base = tmp_path_factory.mktemp("demo")
    manifest = generate(base / "root", base / "withheld", TINY)
    return base / "root", base / "withheld", manifest


def write_subject(
    root: Path,
    subject: str,
    n_train: int,
    n_test: int,
    n_vertices: dict[str, int],
    nsd_offset: int = 0,
    sparse: bool = False,
    roi_classes=tuple(ROI_CLASSES),
) -> SubjectPaths:
    """A syntactically valid subject with the given counts.

    Images are empty files (the reader only lists names); with ``sparse`` the fMRI are
    zero-filled sparse files, so real-size arrays cost no disk and no time.
    """
    p = SubjectPaths(root, subject)
    for split, n in (("train", n_train), ("test", n_test)):
        folder = p.images_dir(split)
        folder.mkdir(parents=True, exist_ok=True)
        base = nsd_offset + (0 if split == "train" else 60_000)
        for k in range(1, n + 1):
            (folder / format_image_name(split, k, base + k)).touch()
    p.roi_dir.mkdir(parents=True, exist_ok=True)
    for hemi in HEMISPHERES:
        v = n_vertices[hemi]
        path = p.fmri(hemi)
        path.parent.mkdir(parents=True, exist_ok=True)
        if sparse:
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_train, v)).flush()
        else:
            np.save(path, np.random.default_rng(0).standard_normal((n_train, v)).astype(np.float32))
        fs_idx = np.sort(np.random.default_rng(1).choice(FSAVERAGE_N_VERTICES, v, replace=False))
        allv = np.zeros(FSAVERAGE_N_VERTICES, np.int32)
        allv[fs_idx] = 1
        np.save(p.fsaverage_vertices(hemi), allv)
        for cls in roi_classes:
            labels = (np.arange(v) % (len(ROI_CLASSES[cls]) + 1)).astype(np.int32)
            np.save(p.roi_mask(hemi, cls, "challenge"), labels)
            fs = np.zeros(FSAVERAGE_N_VERTICES, np.int32)
            fs[fs_idx] = labels
            np.save(p.roi_mask(hemi, cls, "fsaverage"), fs)
    for cls in roi_classes:
        mapping = {0: "Unknown", **{i + 1: n for i, n in enumerate(ROI_CLASSES[cls])}}
        np.save(p.mapping(cls), np.array(mapping, dtype=object), allow_pickle=True)
    return p


@pytest.fixture
def small_root(tmp_path):
    """A valid one-subject root with random fMRI: 20 train / 5 test images, 60 / 70 vertices."""
    write_subject(tmp_path, "subj01", 20, 5, {"lh": 60, "rh": 70})
    return tmp_path


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (small tensors: threads cost more than they give), then as before."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nsdflow_env() -> dict[str, str]:
    """Environment in which subprocesses find this interpreter's `nsdflow` and `snakemake`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_snakemake(workdir: Path, *args: str, check: bool = True, configfile: str = "config.yaml",
                  snakefile: Path = REPO / "Snakefile", env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Snakemake on this repository's Snakefile in ``workdir`` (with its ``configfile``), 2 cores
    (later ``args`` override, e.g. ``"--cores", "1"``); ``kw`` go to :func:`subprocess.run`."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir),
           "--configfile", str(workdir / configfile), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or nsdflow_env(), **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def snakemake_log(workdir: Path, *args: str, **kw) -> str:
    """:func:`run_snakemake`, returning what it printed (stdout and stderr)."""
    proc = run_snakemake(workdir, *args, **kw)
    return proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run's output as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole DAG on tests/configs/tiny.yaml, run once per session: (workdir, process).

    Shared by the end-to-end tests and the report tests; tests must not change its files
    (copy the workdir first to rerun with other settings).
    """
    workdir = tmp_path_factory.mktemp("run")
    shutil.copy(REPO / "tests" / "configs" / "tiny.yaml", workdir / "config.yaml")
    env = nsdflow_env()
    env["NSDFLOW_IMPORT_LOG"] = str(workdir / "imports.jsonl")  # what each job imported (test_codeversion)
    proc = run_snakemake(workdir, env=env)
    return workdir, proc


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM cluster (tests/slurm_cluster.py), stopped by process id at the end.

    Skips only where SLURM is not installed (or the tests do not run as root); a cluster that is
    installed but does not start is a failure.
    """
    from slurm_cluster import SlurmCluster, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
