"""After a change, a rerun redoes what the change invalidated and nothing else.

One small demo run (one subject, one ROI class, AlexNet only) is completed once; each test
copies it (results, logs and Snakemake's metadata in .snakemake/, with their times) and asks
Snakemake's dry run which jobs it would run after one change. Only the SIGKILL test runs jobs.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, nsdflow_env
from conftest import run_snakemake as snakemake

pytestmark = pytest.mark.e2e

# Everything downstream of the readouts: what a readout change must rerun, besides the fits.
AFTER_FITS = {"merge", "score_vertices", "summarize", "scores_page", "plot_roi_bars", "plot_models", "plot_brain_map",
              "submission", "all"}
# The provenance page records the config and the code's git state: any config change rewrites it;
# and rule changes records, first, which jobs rerun because their key changed.
PROVENANCE = {"provenance", "changes"}
EXTRACTION = {"demo", "validate_data", "index_images", "cache_images", "check_backbone", "extract", "combine_features"}


def base_config() -> dict:
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["demo"].update(n_subjects=1, n_train=30, n_test=6, n_shared=0)
    config["regions"]["classes"] = ["floc-places"]  # OPA, PPA, RSC + unassigned: 4 regions
    config["extraction"].update(device="cpu", threads=1)
    config["backbones"] = {"alex": config["backbones"]["alex"]}
    config["models"] = {"alex_ridge": config["models"]["alex_ridge"]}
    return config


N_FITS = 2 * 4  # hemispheres x regions


def planned(workdir: Path, *args, **kw) -> list[tuple[str, str]]:
    """(rule, wildcards) of each job a dry run would run."""
    proc = snakemake(workdir, "--dry-run", *args, **kw)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return []
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if m:
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.append((m.group(1), wc.group(1) if wc else ""))
    assert jobs, out[-3000:]
    return jobs


def incomplete_outputs(workdir: Path) -> list[str]:
    """Outputs that Snakemake marked as being written by a job that has not finished."""
    root = workdir / ".snakemake/incomplete"
    names = []
    for path in root.rglob("*") if root.is_dir() else []:
        if path.is_file() and path.name != "migration_underway":
            parts = [p.lstrip("@") for p in path.relative_to(root).parts]
            names.append(base64.urlsafe_b64decode("".join(parts)).decode())
    return names


def counts(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("reruns") / "base"
    workdir.mkdir()
    write_config(workdir, base_config())
    snakemake(workdir)
    return workdir


@pytest.fixture
def run_copy(completed_run, tmp_path) -> Path:
    """A copy of the completed run, file times and Snakemake metadata included."""
    dest = tmp_path / "run"
    shutil.copytree(completed_run, dest, symlinks=True)
    return dest


# ----------------------------------------------------------------------------- dry runs


def test_second_run_does_nothing(run_copy):
    assert planned(run_copy) == []


def test_readout_parameter_reruns_that_models_fits_and_what_follows(run_copy):
    config = base_config()
    config["models"]["alex_ridge"]["params"] = {"alphas": [1.0, 10.0, 100.0]}
    write_config(run_copy, config)
    jobs = counts(planned(run_copy))
    assert jobs["fit"] == N_FITS
    assert jobs["merge"] == 2 and jobs["score_vertices"] == 2 and jobs["submission"] == 1
    assert set(jobs) <= {"fit", "design"} | AFTER_FITS | PROVENANCE, jobs  # design only if it reads the changed key
    assert not EXTRACTION & set(jobs), jobs


def test_adding_a_backbone_adds_its_extraction_and_its_fits_only(run_copy):
    config = base_config()
    tiny = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["backbones"]["clip"] = tiny["backbones"]["clip"]
    config["models"]["clip_ridge"] = tiny["models"]["clip_ridge"]
    write_config(run_copy, config)
    jobs = planned(run_copy)
    assert [wc for rule, wc in jobs if rule == "extract"] == ["backbone=clip, shard=0, nshards=1"]
    assert [wc for rule, wc in jobs if rule in ("combine_features", "check_backbone")] == ["backbone=clip"] * 2
    fits = [wc for rule, wc in jobs if rule == "fit"]
    assert len(fits) == N_FITS and all("model=clip_ridge" in wc for wc in fits), fits
    assert all("model=clip_ridge" in wc for rule, wc in jobs if rule in ("merge", "score_vertices")), jobs
    # Its design is the new feature set's: alex_ridge's cached design is not recomputed.
    designs = [wc for rule, wc in jobs if rule == "design"]
    assert len(designs) == 1 and designs[0].startswith("featureset=clip."), jobs
    # The new model's scores join the summary and its figures; the submission (alex_ridge) stays.
    assert set(counts(jobs)) == {"check_backbone", "extract", "combine_features", "design", "fit", "merge",
                                 "score_vertices", "summarize", "scores_page", "plot_roi_bars", "plot_models",
                                 "plot_brain_map", "all"} | PROVENANCE, counts(jobs)
    # Brain maps share one colour scale over all models, so the existing model's map is redrawn too.
    assert sorted(wc for rule, wc in jobs if rule == "plot_brain_map") == [
        "model=alex_ridge, subject=subj01", "model=clip_ridge, subject=subj01"]


def repo_copy(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the repository whose package the workflow imports (PYTHONPATH), to edit."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(".git", ".venv", "results", "logs", ".snakemake",
                                                              "__pycache__", "*.egg-info", ".pytest_cache"))
    env = nsdflow_env()
    env["PYTHONPATH"] = str(repo / "src")
    return repo, env


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path} exactly once"
    path.write_text(text.replace(old, new))


def test_a_comment_or_docstring_edit_reruns_nothing(run_copy, tmp_path):
    repo, env = repo_copy(tmp_path)
    # The copy itself changes nothing but the provenance page (the copy has no git history to record).
    assert {rule for rule, _ in planned(run_copy, snakefile=repo / "Snakefile", env=env)} <= PROVENANCE | {"all"}
    for module in ("io.py", "readouts/ridge.py", "evaluate/scoring.py"):
        path = repo / "src/nsdflow" / module
        path.write_text(path.read_text().replace('"""', '"""An edited docstring. ', 1) + "\n# an edit\n")
    assert {rule for rule, _ in planned(run_copy, snakefile=repo / "Snakefile", env=env)} <= PROVENANCE | {"all"}


def test_a_function_body_edit_reruns_the_rules_that_reach_it_and_what_follows(run_copy, tmp_path):
    """readouts/ridge.py is reached by the design and fit commands; evaluate/scoring.py by the scoring
    of vertices (and the ensembles); io.py, through which every command writes, by every rule."""
    repo, env = repo_copy(tmp_path)
    src = repo / "src/nsdflow"
    edit(src / "readouts/ridge.py", "    return mean.astype(np.float32), scale.astype(np.float32)",
         "    mean, scale = mean.astype(np.float32), scale.astype(np.float32)\n    return mean, scale")
    jobs = counts(planned(run_copy, snakefile=repo / "Snakefile", env=env))
    assert jobs["design"] == 1 and jobs["fit"] == N_FITS and jobs["merge"] == 2, jobs
    assert set(jobs) <= {"design", "fit"} | AFTER_FITS | PROVENANCE and not EXTRACTION & set(jobs), jobs

    repo, env = repo_copy(tmp_path / "2")
    edit(repo / "src/nsdflow/evaluate/scoring.py", "    return np.clip(r, -1.0, 1.0)",
         "    r = np.clip(r, -1.0, 1.0)\n    return r")
    jobs = counts(planned(run_copy, snakefile=repo / "Snakefile", env=env))
    assert set(jobs) == {"score_vertices", "summarize", "scores_page", "plot_roi_bars", "plot_models",
                         "plot_brain_map", "all"} | PROVENANCE, jobs

    repo, env = repo_copy(tmp_path / "3")
    edit(repo / "src/nsdflow/io.py", "    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + \"\\n\")",
         "    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)\n    atomic_write_text(path, text + \"\\n\")")
    jobs = counts(planned(run_copy, snakefile=repo / "Snakefile", env=env))
    everything = counts(planned(run_copy, "--forceall"))
    assert jobs == everything, (jobs, everything)


def test_touching_inputs_without_changing_them_reruns_nothing(run_copy):
    later = time.time() + 60
    touched = 0
    for path in (run_copy / "results").rglob("*"):
        # Every file some job reads, left older than nothing: the final outputs keep their times.
        if path.is_file() and not path.is_relative_to(run_copy / "results/demo/algonauts") and \
                path.parent.name not in ("scores", "plots", "roi_median_r", "submission"):
            os.utime(path, (later, later))
            touched += 1
    assert touched > 20
    assert planned(run_copy) == []


# ----------------------------------------------------------------------------- a killed run


def test_killed_run_completes_with_rerun_incomplete(run_copy, completed_run):
    """SIGKILL the controller and its jobs during the fits; --rerun-incomplete redoes what was cut."""
    # One job at a time, so that the kill lands between the first fits and the merges.
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(run_copy),
           "--configfile", str(run_copy / "config.yaml"), "--cores", "1", "--forcerun", "fit"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=nsdflow_env(),
                            start_new_session=True)
    fits = run_copy / "results/readouts/alex_ridge/subj01"
    before = {p: p.stat().st_mtime_ns for p in fits.rglob("*.npz") if p.parent != fits}
    incomplete = run_copy / ".snakemake/incomplete"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            # (Snakemake deletes a job's old outputs when it starts it.)
            redone = [p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t]
            running = list(incomplete.glob("*")) if incomplete.is_dir() else []
            if len(redone) >= 2 and running:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the fits did not start within 180 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and every job it started
        proc.wait()
    assert len(redone) < N_FITS

    # The killed controller left its lock, and a marker for each output of the job it was running.
    snakemake(run_copy, "--unlock")
    marked = incomplete_outputs(run_copy)
    assert marked, "no job was marked incomplete"
    if any((run_copy / f).exists() for f in marked):
        # An output that exists but whose job never finished is refused by a plain run...
        plain = snakemake(run_copy, "--dry-run", check=False)
        assert plain.returncode != 0 and "incomplete" in (plain.stdout + plain.stderr).lower()
    # ...and --rerun-incomplete redoes those jobs (outputs are written under a temporary name and
    # renamed when complete, so a missing output is all a killed job can leave).
    snakemake(run_copy, "--rerun-incomplete")
    assert planned(run_copy) == []
    # No step read a partial file: the results are those of the uninterrupted run.
    for table in ("results/scores/leaderboard.csv", "results/scores/summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(run_copy / table), pd.read_csv(completed_run / table))
