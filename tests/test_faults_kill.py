"""SIGKILL at a random point of a job, in each stage: the rerun completes and equals an uninterrupted run.

One small demo run is completed once. Each test copies it, forces one stage (extraction, the
fits, the merges, the submission zip) and everything after it to run again, waits until that
stage's job process is alive, sleeps a random (seeded) fraction of a job's life, and kills it:
either the job alone (Snakemake sees it fail and stops) or the controller with all its jobs, as a
reboot would (Snakemake's lock and incomplete markers stay behind). Then a plain rerun, after
``--unlock`` and with ``--rerun-incomplete`` where the controller died, must complete, and every
result must equal the uninterrupted run's: predictions and features to the bit, tables exactly.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, nsdflow_env, run_snakemake

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: stage -> (rule forced to run again, the `nsdflow` subcommand its job runs)
STAGES = {"extraction": ("extract", "extract"), "fitting": ("fit", "fit"), "merging": ("merge", "merge"),
          "zipping": ("submission", "submission")}


def small_config() -> dict:
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["demo"].update(n_subjects=1, n_train=30, n_test=6, n_shared=0)
    config["regions"]["classes"] = ["floc-places"]
    config["extraction"].update(device="cpu", threads=1)
    config["backbones"] = {"alex": config["backbones"]["alex"]}
    config["models"] = {"alex_ridge": config["models"]["alex_ridge"]}
    config["ensembles"] = {}
    config["submission"] = {"model": "alex_ridge"}
    config["plots"] = {"brain_maps": {"enabled": False}}
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("kill") / "reference"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(small_config()))
    run_snakemake(workdir)
    return workdir


def _job_pids(session: int, subcommand: str) -> list[int]:
    """Processes of the run's session whose command line is `nsdflow <subcommand> ...`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != session:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        words = [a.decode(errors="replace") for a in argv]
        if any(w.endswith("nsdflow") for w in words) and subcommand in words:
            pids.append(int(proc.name))
    return pids


def _results(workdir: Path) -> dict[str, object]:
    """Every result a later step or a researcher reads, loaded for comparison."""
    out: dict[str, object] = {}
    for path in sorted((workdir / "results/predictions").rglob("*.npz")):
        with np.load(path) as f:
            out[str(path.relative_to(workdir))] = {k: f[k] for k in f.files}
    with zipfile.ZipFile(workdir / "results/submission/submission.zip") as zf:
        out["submission"] = {n: zf.read(n) for n in sorted(zf.namelist())}
    for table in ("leaderboard", "summary"):
        out[table] = pd.read_csv(workdir / f"results/scores/{table}.csv")
    import zarr

    store = zarr.open_group(workdir / "results/features/alex.zarr", mode="r")
    out["features"] = {name: arr[:] for name, arr in store["layers"].arrays()}
    return out


def _assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(got[key], value, check_exact=True)
        elif key == "submission":
            assert got[key] == value, "the submission zip's arrays differ"
        else:
            assert value.keys() == got[key].keys(), key
            for name in value:
                assert np.array_equal(got[key][name], value[name], equal_nan=True), f"{key}: {name} differs"


@pytest.mark.parametrize("who", ["job", "everything"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_killed_job_reruns_to_the_same_results(reference, tmp_path, stage, who):
    rule, subcommand = STAGES[stage]
    run = tmp_path / "run"
    shutil.copytree(reference, run, symlinks=True)
    rng = random.Random(f"{stage}-{who}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(run),
           "--configfile", str(run / "config.yaml"), "--cores", "2", "--forcerun", rule]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=nsdflow_env(),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (pids := _job_pids(proc.pid, subcommand)):
            assert proc.poll() is None, f"the run ended before a {rule} job started"
            assert time.monotonic() < deadline, f"no {rule} job started within 240 s"
            time.sleep(0.02)
        # A random point of the job's life: importing, computing, writing, or just done.
        time.sleep(rng.uniform(0.0, 2.5))
        if who == "job":
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it had finished
            proc.wait(timeout=240)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    run_snakemake(run, "--unlock")
    run_snakemake(run, "--rerun-incomplete")
    assert "Nothing to be done" in run_snakemake(run, "--dry-run").stdout
    _assert_same(_results(run), _results(reference))
