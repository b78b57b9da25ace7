"""Benchmark: the whole readout stage of a full-size synthetic configuration, through Snakemake.

Builds (untimed) a data root at the real Algonauts 2023 counts (8 subjects, 8,779-9,841
training images, 18,978-20,544 vertices per hemisphere, random float32 fMRI, 2 x 2 PNGs),
ROI masks giving about 32 regions per hemisphere (the six classes, sizes like NSD's, scattered
over the hemisphere), the validated summaries, and one pre-made feature store (512 features per
image, float16, as extraction would write it: no extraction runs). Then times

    snakemake --cores N --allowed-rules split regions targets design fit merge <merged predictions>

i.e. per subject the split and the shared ridge design, per hemisphere the regions and the
per-region fMRI files, one fit job per subject x hemisphere x region (about 500) and the merges. Run from the repository root::

    python bench/readout_stage.py                      # full size (needs ~14 GB of disk)
    python bench/readout_stage.py --subjects 2         # smaller
    python bench/readout_stage.py --fit-jobs hemisphere   # one fit job per hemisphere instead
    python bench/readout_stage.py --oof                # fits also write ridge's leave-one-out predictions

Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from nsdflow.data.layout import (  # noqa: E402
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    REAL_COUNTS,
    ROI_CLASSES,
    SubjectPaths,
    format_image_name,
)
from nsdflow.readouts.synthetic import write_feature_store  # noqa: E402

#: Share of a hemisphere's vertices in each ROI of a class (the rest of the class is unlabelled).
CLASS_SHARE = {"prf-visualrois": 0.28, "floc-bodies": 0.05, "floc-faces": 0.04, "floc-places": 0.04,
               "floc-words": 0.04, "streams": 0.45}


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    return buf.getvalue()


def write_root(root: Path, subjects: list[str], seed: int = 0) -> dict[str, dict]:
    """The Algonauts layout at real counts; returns {subject: {"train": ids, "test": ids}}.

    Images are one 2 x 2 PNG written under every name (validation opens them; nothing reads
    pixels, as the features are made up)."""
    png = _tiny_png()
    rng = np.random.default_rng(seed)
    shared = rng.choice(73_000, 1000, replace=False)
    ids = {}
    for subject in subjects:
        c = REAL_COUNTS[subject]
        own = rng.choice(np.setdiff1d(np.arange(73_000), shared), c["train"] + c["test"] - 1000, replace=False)
        pool = rng.permutation(np.concatenate([shared, own]))
        ids[subject] = {"train": np.sort(pool[: c["train"]]), "test": np.sort(pool[c["train"]:])}
        p = SubjectPaths(root, subject)
        for split in ("train", "test"):
            folder = p.images_dir(split)
            folder.mkdir(parents=True, exist_ok=True)
            for k, nsd in enumerate(ids[subject][split], start=1):
                (folder / format_image_name(split, k, int(nsd))).write_bytes(png)
        p.roi_dir.mkdir(parents=True, exist_ok=True)
        for hemi in HEMISPHERES:
            v = c[hemi]
            p.fmri(hemi).parent.mkdir(parents=True, exist_ok=True)
            fmri = np.lib.format.open_memmap(p.fmri(hemi), mode="w+", dtype=np.float32, shape=(c["train"], v))
            for i in range(0, c["train"], 1024):
                fmri[i:i + 1024] = rng.standard_normal((min(1024, c["train"] - i), v), dtype=np.float32)
            fmri.flush()
            del fmri
            fs_idx = np.sort(rng.choice(FSAVERAGE_N_VERTICES, v, replace=False))
            allv = np.zeros(FSAVERAGE_N_VERTICES, np.int32)
            allv[fs_idx] = 1
            np.save(p.fsaverage_vertices(hemi), allv)
            taken = np.zeros(v, bool)
            for cls, rois in ROI_CLASSES.items():
                labels = np.zeros(v, np.int32)
                free = np.flatnonzero(~taken) if cls != "streams" else np.arange(v)  # streams overlap the others
                chosen = rng.choice(free, int(CLASS_SHARE[cls] * v), replace=False)
                labels[chosen] = rng.integers(1, len(rois) + 1, chosen.size)
                if cls != "streams":
                    taken[chosen] = True
                np.save(p.roi_mask(hemi, cls, "challenge"), labels)
                fs = np.zeros(FSAVERAGE_N_VERTICES, np.int32)
                fs[fs_idx] = labels
                np.save(p.roi_mask(hemi, cls, "fsaverage"), fs)
        for cls, rois in ROI_CLASSES.items():
            mapping = {0: "Unknown", **{i + 1: n for i, n in enumerate(rois)}}
            np.save(p.mapping(cls), np.array(mapping, dtype=object), allow_pickle=True)
    return ids


def setup(work: Path, n_subjects: int, n_features: int, fit_jobs: str, threads: int,
          oof: bool = False) -> tuple[dict, list[str]]:
    subjects = [f"subj{i:02d}" for i in range(1, n_subjects + 1)]
    root = work / "data"
    ids = write_root(root, subjects)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    (work / "results/data").mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        subprocess.run([sys.executable, "-m", "nsdflow.cli", "-q", "validate-data", "--data", str(root), "--subject",
                        subject, "--no-finite-check", "--out", str(work / f"results/data/{subject}.json")], check=True,
                       env=env)
    all_ids = np.unique(np.concatenate([np.concatenate([d["train"], d["test"]]) for d in ids.values()]))
    feats = np.random.default_rng(1).standard_normal((all_ids.size, n_features), dtype=np.float32)
    write_feature_store(work / "results/features/clip.zarr", all_ids, {"image": feats}, chunk=256, dtype="float16",
                        manifest=work / "results/features/clip.json", name="clip")
    config = {
        "data": {"root": str(root), "subjects": list(range(1, n_subjects + 1)), "check_finite": False},
        "split": {"val_fraction": 0.1, "seed": 0},
        "readouts": {"backend": "numpy", "threads": threads},
        "backbones": {"clip": {"kind": "clip", "weights": {"init": "random", "seed": 0},
                               "layers": {"image": {"pool": "full"}}}},
        "models": {"ridge": {"readout": "ridge", "features": ["clip/image"], "fit_jobs": fit_jobs}},
    }
    if oof:  # an ensemble choosing weights on out-of-fold predictions: the fits also make ridge's
        # leave-one-out ones (oof_pred). Its second member repeats the model, so it adds no fit job.
        config["models"]["ridge_again"] = dict(config["models"]["ridge"])
        config["ensembles"] = {"soup": {"models": ["ridge", "ridge_again"], "method": "softmax"}}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"results/predictions/ridge/{s}_{h}.npz" for s in subjects for h in HEMISPHERES]
    return config, targets


def _cpu_times() -> dict[str, float]:
    """The machine's CPU seconds so far (user, system, iowait, idle; all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait = (int(x) / tick for x in fields[:5])
    return {"user": user + nice, "system": system, "iowait": iowait, "idle": idle}


def _bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern)) if folder.is_dir() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--fit-jobs", default="region", choices=["region", "hemisphere"])
    ap.add_argument("--oof", action="store_true",
                    help="with an ensemble that selects on out-of-fold predictions (the fits write ridge's LOO ones)")
    ap.add_argument("--workdir", help="where to build it (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="readout-stage-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        _, targets = setup(work, a.subjects, a.features, a.fit_jobs, threads=a.cores, oof=a.oof)
        setup_s = time.perf_counter() - t0
        print(f"setup: {a.subjects} subjects at real size, {a.features} features, in {work} ({setup_s:.0f} s)",
              flush=True)
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), "--cores", str(a.cores), "--scheduler", "greedy",
               "--allowed-rules", "changes", "split", "regions", "targets", "design", "fit", "merge", "--", *targets]
        env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
                   PYTHONPATH=str(REPO / "src"))
        cpu0 = _cpu_times()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        stage_s = time.perf_counter() - t0
        cpu = {k: round(v - cpu0[k], 1) for k, v in _cpu_times().items()}
        if proc.returncode:
            raise SystemExit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        counts = {m.group(1): int(m.group(2)) for m in
                  re.finditer(r"^(\w+)\s+(\d+)\s*$", (proc.stdout + proc.stderr).split("Job stats:")[-1], re.M)}
        design_s = [float(open(p).read().splitlines()[1].split("\t")[0])
                    for p in (work / "benchmarks/design").rglob("*.tsv")]
        fit_logs = list((work / "logs/fit").rglob("*.log"))
        fit_s = []
        for p in fit_logs:
            m = re.search(r"fitted in ([0-9.]+) s", p.read_text())
            if m:
                fit_s.append(float(m.group(1)))
        result = {
            "subjects": a.subjects, "features": a.features, "cores": a.cores, "fit_jobs": a.fit_jobs,
            "stage_seconds": round(stage_s, 1), "setup_seconds": round(setup_s, 1), "jobs": counts,
            "design_seconds_mean": round(float(np.mean(design_s)), 2) if design_s else None,
            "fit_seconds_in_job_total": round(float(np.sum(fit_s)), 1),
            "fit_seconds_in_job_median": round(float(np.median(fit_s)), 3) if fit_s else None,
            # the machine's CPU seconds over the stage (all cores; includes anything else running)
            "cpu_seconds": cpu,
            "fmri_gb": round(_bytes(work / "data", "*_training_fmri.npy") / 1e9, 2),
            "targets_gb": round(_bytes(work / "results/targets", "*.npy") / 1e9, 2),
            "fits_gb": round(_bytes(work / "results/readouts", "*.npz") / 1e9, 2),
            "merged_gb": round(_bytes(work / "results/predictions", "*.npz") / 1e9, 2),
            "command": " ".join(cmd),
        }
        print(json.dumps(result, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=2))
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
