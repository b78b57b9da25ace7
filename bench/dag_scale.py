"""How long Snakemake takes to plan a full Algonauts configuration: dry run and no-op rerun.

Builds a synthetic data root of the real shapes (8 subjects with the real image counts, vertex
counts and all six ROI classes; fMRI as zero-filled sparse files, images as empty files: no disk
and no time), a config with 3 backbones and 3 readout models per backbone, and times

1. ``snakemake --dry-run`` on the fresh root (every job to run: a few thousand);
2. ``snakemake --dry-run`` and ``snakemake`` once every output exists and is recorded as done
   (made with ``--touch`` over empty placeholder outputs), which must find nothing to do;
3. after new values in one subject's one hemisphere of training fMRI (same size, other bytes),
   which jobs' keys change, i.e. what a rerun would redo (that hemisphere's fits and what follows).

The first dry run hashes the data root's files (12 GB of sparse fMRI files here; their digests
are then cached by path, size and modification time in ``.snakemake/nsdflow-digests.json``):
it is reported on its own row.

Readout models: per backbone, one for every readout the schema knows (``--readouts-per-backbone``
of them); while fewer than three exist, ridge variants (other alphas, LOO) stand in so that the
job count is the real one.

    python bench/dag_scale.py [--workdir DIR] [--repeat 3] [--readouts-per-backbone 3] [--subjects 8]

prints a Markdown table: wall-clock seconds of the whole snakemake command, and the CPU seconds
it used (user + sys, which a busy shared machine inflates less than the wall time).

The no-op is measured on a DAG that ``--touch`` marked done: Snakemake then has no metadata
records to read and compare (a real finished run has one per output), which a profile of the
first dry run puts at well under a second for 5,000 jobs.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from conftest import nsdflow_env, write_subject  # noqa: E402

from nsdflow.data.layout import REAL_COUNTS, ROI_CLASSES  # noqa: E402


def build_root(root: Path, n_subjects: int = 8) -> None:
    """The first ``n_subjects`` with the real counts; skipped when ``root`` is complete already."""
    if (root / f".complete-{n_subjects}").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    for i, (subject, c) in enumerate(list(REAL_COUNTS.items())[:n_subjects]):
        write_subject(root, subject, c["train"], c["test"], {"lh": c["lh"], "rh": c["rh"]},
                      nsd_offset=i * 1_500, sparse=True)
    (root / f".complete-{n_subjects}").touch()


def readout_models() -> list[tuple[str, dict]]:
    """Three readout settings: each readout the schema knows, padded with ridge variants."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    readouts = schema["properties"]["models"]["additionalProperties"]["properties"]["readout"]["enum"]
    needs = {"pca_linear": {"pca": {"n_components": 100, "batch_size": 300}}}  # the devkit's PCA(100)
    models = [(r, {"readout": r, **needs.get(r, {})}) for r in readouts]
    pads = [("ridge_loo", {"readout": "ridge", "params": {"cv": "loo"}}),
            ("ridge_narrow", {"readout": "ridge", "params": {"alphas": [1.0, 100.0, 10000.0]}})]
    return (models + pads)[:3] if len(models) < 3 else models


def full_config(root: Path, per_backbone: int) -> dict:
    backbones = {
        "alexnet": {"kind": "alexnet", "weights": {"init": "random", "seed": 0},
                    "layers": {"features.2": {"pool": "avg4"}, "features.5": {"pool": "avg2"}}},
        "clip_vitb32": {"kind": "clip", "model": "ViT-B-32", "weights": {"init": "random", "seed": 0},
                        "layers": {"image": {"pool": "full"}, "blocks.6": {"pool": "cls"}}},
        "sam_vitb": {"kind": "sam", "model": "vit_b", "weights": {"init": "random", "seed": 0},
                     "layers": {"neck": {"pool": "avg4"}}},
    }
    models = {}
    for b, spec in backbones.items():
        for name, readout in readout_models()[:per_backbone]:
            models[f"{b}_{name}"] = {**readout, "features": [f"{b}/{layer}" for layer in spec["layers"]]}
    return {"data": {"root": str(root), "subjects": "all", "check_finite": False},
            "regions": {"classes": list(ROI_CLASSES)},
            "backbones": backbones, "models": models,
            "submission": {"model": next(iter(models))}}


def snakemake(workdir: Path, *args: str) -> tuple[tuple[float, float], str]:
    """Run snakemake; (wall seconds, CPU seconds user+sys of it and its children), output."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    env = nsdflow_env()
    env["PYTHONPATH"] = str(REPO / "src")
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return (elapsed, cpu), proc.stdout + proc.stderr


TRIVIAL = """\
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))
rule one:
    input: "in.txt"
    output: "out/{{i}}.txt"
    shell: "cp {{input}} {{output}}"
"""


def trivial_dry_run(workdir: Path, n_jobs: int) -> tuple[float, float]:
    """The machine's yardstick: Snakemake's dry run of n trivial jobs (one input, one output, no
    functions), the kind of job the issue's "2,000 trivial jobs in 1.3 s" was measured on."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(TRIVIAL.format(n=n_jobs))
    (workdir / "in.txt").touch()
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"),
           "--cores", "2", "--dry-run"]
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=workdir)
    elapsed, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def job_count(out: str) -> int:
    m = re.search(r"^total\s+(\d+)$", out, re.M)
    return int(m.group(1)) if m else 0


def placeholder_outputs(workdir: Path, dry_run_output: str) -> int:
    """Create every output a dry run lists, empty, so that --touch can mark the DAG done."""
    n = 0
    for line in dry_run_output.splitlines():
        line = line.strip()
        if line.startswith("output: "):
            for f in line[len("output: "):].split(", "):
                path = workdir / f
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
                n += 1
    return n


def jobs_and_keys(run: Path) -> dict:
    """Every job of the run's DAG and its key (nsdflow.dag), computed in this process."""
    from snakemake.utils import validate

    from nsdflow.dag import Dag
    from nsdflow.digests import DigestCache
    from nsdflow.plan import make_plan

    config = yaml.safe_load((run / "config.yaml").read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    dag = Dag(make_plan(config), DigestCache(run / ".snakemake" / "nsdflow-digests.json"))
    return {job: dag.key(job[0], **dict(job[1])) for job in dag.jobs()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="where to put the root and the run (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3, help="timings per measurement; the best is reported")
    ap.add_argument("--readouts-per-backbone", type=int, default=3, choices=(1, 2, 3),
                    help="readout models per backbone: 3 (default) is 3 backbones x 3 readouts = 9 models; "
                         "1 is config/algonauts.yaml's shape (one model per backbone)")
    ap.add_argument("--subjects", type=int, default=8, help="subjects of the synthetic root (real counts)")
    a = ap.parse_args(argv)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="dag-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    build_root(workdir / "root", a.subjects)
    print(f"synthetic root: {workdir / 'root'} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    run = workdir / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(full_config(workdir / "root", a.readouts_per_backbone), sort_keys=False))

    rows = []
    first, out0 = snakemake(run, "--dry-run")
    rows.append(("first dry run: hashes the data root's files", job_count(out0), [first]))
    times, out = zip(*(snakemake(run, "--dry-run") for _ in range(a.repeat)))
    n_jobs = job_count(out[0])
    rows.append(("dry run, nothing done yet", n_jobs, times))
    times, _ = zip(*(snakemake(run, "--dry-run", "--quiet", "rules") for _ in range(a.repeat)))
    rows.append(("dry run, nothing done yet, `--quiet rules`", n_jobs, times))

    placeholder_outputs(run, out[0])
    snakemake(run, "--touch")
    times, outs = zip(*(snakemake(run, "--dry-run") for _ in range(a.repeat)))
    assert all("Nothing to be done" in o for o in outs), outs[0][-2000:]
    rows.append(("dry run, everything done (no-op)", 0, times))
    times, outs = zip(*(snakemake(run) for _ in range(a.repeat)))
    assert all("Nothing to be done" in o for o in outs), outs[0][-2000:]
    rows.append(("run, everything done (no-op)", 0, times))

    # New values in one hemisphere's training fMRI (the same size, other bytes): which jobs' keys
    # change. Snakemake reruns exactly those (tests/test_reruns_data.py runs it); here the outputs
    # were only touched, so Snakemake has no record to compare keys with, and the DAG is asked.
    os.chdir(run)
    before = jobs_and_keys(run)
    fmri = workdir / "root" / "subj01" / "training_split" / "training_fmri" / "lh_training_fmri.npy"
    middle = fmri.stat().st_size // 2
    with open(fmri, "r+b") as f:
        f.seek(middle)
        original = f.read(8)
        f.seek(middle)
        f.write(b"\x01" * 8)
    try:
        after = jobs_and_keys(run)
    finally:
        with open(fmri, "r+b") as f:
            f.seek(middle)
            f.write(original)
    changed = Counter(rule for job, key in after.items() if before.get(job) != key for rule in [job[0]])
    print(f"one fMRI file changed (subj01 lh): {sum(changed.values())} of {len(after)} jobs change key: "
          f"{dict(sorted(changed.items()))}")

    for n in (2000, n_jobs):
        times = [trivial_dry_run(workdir / f"trivial{n}", n) for _ in range(a.repeat)]
        rows.append((f"yardstick: dry run of {n:,} trivial jobs (same machine, same Snakemake)", n, times))

    import snakemake as sm

    print(f"Snakemake {sm.__version__}")
    print(f"| what | jobs | wall s (best of {a.repeat}) | CPU s, user+sys (best of {a.repeat}) |")
    print("|---|---|---|---|")
    for what, n, t in rows:
        print(f"| {what} | {n} | {min(w for w, _ in t):.1f} | {min(c for _, c in t):.1f} |")


if __name__ == "__main__":
    main()
