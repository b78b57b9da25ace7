"""The demo DAG through profiles/slurm on a real one-node SLURM cluster (tests/slurm_cluster.py).

The cluster has two CPUs, this machine's memory and two fake GPUs; SLURM has no accounting here,
so the executor polls ``squeue`` (jobs stay listed for MinJobAge). Checked: the scores and the
submission are there and sound, every job that is not a local rule went through ``sbatch`` with
the requests the profile and the config give it (extraction a GPU, fits grouped three to a job,
each group one fit wide), the local rules never reached SLURM, and a second run has nothing to do.
The profile is used as shipped except for what this small cluster needs: the squeue status
command, a first status poll after 1 s instead of 20, 2 cores, a lower memory cap, and groups of
3 fits instead of 24 (so that the 8 fits make several groups).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import yaml
from conftest import REPO, nsdflow_env

PROFILE = REPO / "profiles" / "slurm"
LOCAL_RULES = {"all", "changes", "index_images", "split", "merge", "score_vertices", "summarize", "scores_page", "plot_roi_bars",
               "plot_models", "plot_brain_map", "plot_attention", "provenance", "submission", "ensemble", "selection"}


def slurm_config() -> dict:
    """tests/configs/tiny.yaml cut to one subject, one backbone, one ROI class (4 regions), on the CPU."""
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["demo"].update(n_subjects=1, n_train=30, n_test=6, n_shared=0)
    config["regions"]["classes"] = ["floc-places"]
    config["extraction"].update(device="cpu", gpus=1, threads=1, mem_mb=2000, runtime=10)
    config["backbones"] = {"alex": config["backbones"]["alex"]}
    config["models"] = {"alex_ridge": config["models"]["alex_ridge"]}
    return config


def profile_resources(mem_mb: int) -> list[str]:
    """The profile's `resources` with the per-job memory cap lowered to what this node has."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    return [r for r in profile["resources"] if not r.startswith("mem_mb=")] + [f"mem_mb={mem_mb}"]


def snakemake_slurm(workdir, cluster, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--workflow-profile", str(PROFILE),
           # This cluster has no accounting database: poll squeue (MinJobAge keeps finished jobs listed).
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
           "--cores", "2", "--local-cores", "1", "--latency-wait", "5",
           "--resources", *profile_resources(min(8000, cluster.memory_mb // 2)),
           "--group-components", "fits=3", *args]
    env = nsdflow_env()
    env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    env["PATH"] = str(cluster.base / "bin") + os.pathsep + env["PATH"]  # its srun wrapper (tests/slurm_cluster.py)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def test_profile_names_existing_rules():
    """A renamed rule must not silently drop out of the profile's groups, requests or local rules."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                          "--configfile", str(REPO / "tests/configs/tiny.yaml"), "--list-rules"],
                         capture_output=True, text=True, env=nsdflow_env(), cwd=REPO, check=True).stdout
    rules = set(out.split())
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    named = set(profile["set-resources"]) | {g.split("=")[0] for g in profile["groups"]}
    assert named <= rules, named - rules
    assert LOCAL_RULES <= rules, LOCAL_RULES - rules
    common = (REPO / "workflow/rules/common.smk").read_text()
    listed = set(re.findall(r"^    (\w+),$", common.split("localrules:", 1)[1], re.M))
    assert listed == LOCAL_RULES


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_dag_runs_through_the_slurm_profile(slurm_cluster, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(slurm_config()))
    proc = snakemake_slurm(tmp_path, slurm_cluster)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{log[-8000:]}\n{slurm_cluster.logs()}"

    # The results are there and sound.
    board = pd.read_csv(tmp_path / "results/scores/leaderboard.csv")
    assert set(board["model"]) == {"alex_ridge"} and board["challenge_score"].between(0, 100).all()
    with zipfile.ZipFile(tmp_path / "results/submission/submission.zip") as zf:
        assert sorted(zf.namelist()) == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy"]

    # What SLURM ran: this run's jobs, by the run id the executor names them with.
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    jobs = [j for j in slurm_cluster.jobs() if j["name"] == run_id]
    assert jobs and all(j["state"] == "COMPLETED" for j in jobs), jobs
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", job["comment"]).group(1)
        by_rule.setdefault(rule, []).append(job)
    assert set(by_rule) == {"demo", "validate_data", "regions", "targets", "cache_images", "extract", "design",
                            "fits_fit"}, by_rule
    assert not LOCAL_RULES & set(by_rule)

    # Extraction asked for a GPU and the config's memory and time.
    (extract,) = by_rule["extract"]
    assert re.search(r"TresPerJob=\S*gres:gpu:1", slurm_cluster.job_details(extract["id"]))
    assert (extract["mem"], extract["time_limit"]) == ("2000M", "10:00"), extract

    # 8 fits (2 hemispheres x 3 ROIs + unassigned) in 3 groups of at most 3, each one fit wide:
    # 1 CPU, one fit's memory, and the fits' runtimes (5 min each in the profile) added up.
    groups = by_rule["fits_fit"]
    assert len(groups) == 3
    assert all((g["cpus"], g["mem"]) == ("1", "4000M") for g in groups), groups
    assert sorted(g["time_limit"] for g in groups) == ["10:00", "15:00", "15:00"], groups
    assert "localrule merge:" in log and "localrule score_vertices:" in log

    # Nothing left to do.
    again = snakemake_slurm(tmp_path, slurm_cluster, "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
