"""A real data root: a change to one file reruns exactly what reads it; copying or touching it nothing.

The tiny demo dataset is copied into a run's folder and used as a real data root (``data.root:
data``, relative, so that a copy of the run folder is the same run). The DAG runs once; each test
copies the run and asks Snakemake's dry run which jobs a change would rerun. The image test then
runs the change and checks that the image cache and the extraction redid that one image only.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY, run_snakemake
from PIL import Image

from nsdflow.dag import Dag
from nsdflow.data.demo import generate
from nsdflow.data.layout import SubjectPaths, WithheldPaths
from nsdflow.digests import DigestCache, combine
from nsdflow.plan import make_plan

pytestmark = pytest.mark.e2e

MODELS = ("alex_ridge", "alex_loo", "best")  # two models and an ensemble of them
REGIONS = ("OPA", "PPA", "RSC", "unassigned")


def config() -> dict:
    c = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    c["data"] = {"root": "data", "withheld": "withheld"}
    c["regions"] = {"classes": ["floc-places"]}
    c["extraction"].update(device="cpu", threads=1)
    c["backbones"] = {"alex": {**c["backbones"]["alex"], "chunk": 8}}
    c["models"] = {"alex_ridge": {"readout": "ridge", "features": ["alex/features.5"]},
                   "alex_loo": {"readout": "ridge", "features": ["alex/features.5"],
                                "params": {"cv": "loo", "alphas": [1.0, 100.0]}}}
    c["ensembles"] = {"best": {"models": ["alex_ridge", "alex_loo"], "method": "best"}}
    c["submission"] = {"model": "best"}
    c["plots"] = {"split": "test"}
    return c


@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("real_root") / "run"
    generate(run / "data", run / "withheld", TINY)
    (run / "config.yaml").write_text(yaml.safe_dump(config()))
    run_snakemake(run)
    return run


@pytest.fixture
def run(completed, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(completed, dest, symlinks=True)
    return dest


def planned(run: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run would run (the bookkeeping rules left out)."""
    out = run_snakemake(run, "--dry-run")
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return []
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", text):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if m and m.group(1) not in ("changes", "all"):
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            pairs = dict(p.split("=", 1) for p in wc.group(1).split(", ")) if wc else {}
            jobs.append((m.group(1), pairs))
    return jobs


def rules(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


#: What follows any change of a subject x hemisphere's scores: the tables, page and figures.
TABLES = {"selection", "summarize", "scores_page", "plot_roi_bars", "plot_models", "plot_brain_map"}


def test_copying_or_touching_the_data_root_reruns_nothing(run):
    later = time.time() + 3600
    for folder in ("data", "withheld"):
        for path in (run / folder).rglob("*"):
            os.utime(path, (later, later))
    assert planned(run) == []


def test_one_hemispheres_fmri_reruns_that_hemispheres_fits_and_the_tables_after_them(run):
    path = SubjectPaths(run / "data", "subj02").fmri("rh")
    np.save(path, np.load(path)[:, ::-1].copy())  # the same values, in other columns
    jobs = planned(run)
    assert set(rules(jobs)) == {"validate_data", "targets", "fit", "merge", "ensemble", "score_vertices",
                                "submission"} | TABLES, rules(jobs)
    for rule, wc in jobs:
        if rule in ("targets", "fit", "merge", "ensemble", "score_vertices"):
            assert (wc["subject"], wc["hemi"]) == ("subj02", "rh"), (rule, wc)
    counts = rules(jobs)
    assert counts["fit"] == 2 * len(REGIONS)  # both ridge models fit per region
    assert counts["merge"] == 2 and counts["ensemble"] == 1 and counts["score_vertices"] == len(MODELS)
    assert counts["validate_data"] == 1 and counts["plot_roi_bars"] == 4


def test_an_roi_mask_reruns_its_hemispheres_regions_and_what_follows(run):
    path = SubjectPaths(run / "data", "subj01").roi_mask("lh", "floc-places", "challenge")
    labels = np.load(path)
    np.save(path, np.where(labels == 1, 2, labels).astype(labels.dtype))  # OPA becomes PPA
    jobs = planned(run)
    assert {"regions", "targets", "fit", "merge", "score_vertices"} <= set(rules(jobs))
    assert not {"design", "split", "extract", "cache_images", "index_images"} & set(rules(jobs)), rules(jobs)
    for rule, wc in jobs:
        if "hemi" in wc and rule not in TABLES:
            assert (wc["subject"], wc["hemi"]) == ("subj01", "lh"), (rule, wc)


def test_withheld_noise_ceilings_rerun_scoring_only(run):
    path = WithheldPaths(run / "withheld", "subj01").noise_ceiling("rh")
    np.save(path, np.load(path) * 0.9)
    jobs = planned(run)
    assert set(rules(jobs)) == {"score_vertices", "summarize", "scores_page", "plot_roi_bars", "plot_models",
                                "plot_brain_map"}, rules(jobs)
    assert all((wc["subject"], wc["hemi"]) == ("subj01", "rh") for rule, wc in jobs if rule == "score_vertices")


def own_image(root: Path, subject: str, other: str) -> Path:
    """A training image of ``subject`` that ``other`` did not see."""
    theirs = {p.name.split("_nsd-")[1] for p in SubjectPaths(root, other).images_dir("train").iterdir()}
    mine = sorted(SubjectPaths(root, subject).images_dir("train").iterdir())
    return next(p for p in mine if p.name.split("_nsd-")[1] not in theirs)


def test_an_image_reextracts_that_image_only_and_reruns_the_subject_who_saw_it(run, completed):
    image = own_image(run / "data", "subj01", "subj02")
    pixels = np.asarray(Image.open(image)).copy()
    pixels[:8] = 255 - pixels[:8]  # new content under the same name
    Image.fromarray(pixels).save(image)
    jobs = planned(run)
    counts = rules(jobs)
    assert {"validate_data", "cache_images", "extract", "combine_features", "design", "fit"} <= set(counts), counts
    assert "index_images" not in counts  # the names did not change
    for rule, wc in jobs:
        if "subject" in wc and rule not in TABLES:
            assert wc["subject"] == "subj01", (rule, wc)  # subj02 never saw the image: nothing of it reruns

    run_snakemake(run)
    cache_log = (run / "logs/cache_images.log").read_text()
    assert "1 of " in cache_log and "images changed: decoded again" in cache_log, cache_log[-2000:]
    extract_log = next((run / "logs/extract").rglob("*.log")).read_text()
    assert "1 changed images to extract again" in extract_log, extract_log[-2000:]
    # The store now equals a store extracted from scratch from the changed images.
    fresh = run.parent / "fresh"
    shutil.copytree(run / "data", fresh / "data")
    shutil.copytree(run / "withheld", fresh / "withheld")
    shutil.copy(run / "config.yaml", fresh / "config.yaml")
    run_snakemake(fresh, "--until", "combine_features")
    import zarr

    a = zarr.open_group(run / "results/features/alex.zarr", mode="r")["layers/features.5"][:]
    b = zarr.open_group(fresh / "results/features/alex.zarr", mode="r")["layers/features.5"][:]
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-3)  # float16 features, one row from a batch of one
    old = zarr.open_group(completed / "results/features/alex.zarr", mode="r")["layers/features.5"][:]
    assert (a != old).any(axis=1).sum() == 1  # only the image's row was extracted again


def test_data_digests_are_content_and_cached_by_size_and_time(tmp_path):
    f = tmp_path / "a.npy"
    np.save(f, np.arange(10.0))
    cache = DigestCache(tmp_path / "digests.json")
    first = cache.digest(f)
    cache.save()
    later = time.time() + 60
    os.utime(f, (later, later))
    assert DigestCache(tmp_path / "digests.json").digest(f) == first  # touched: hashed again, the same
    np.save(f, np.arange(10.0) + 1)
    assert DigestCache(tmp_path / "digests.json").digest(f) != first
    # A cached entry is used while the size and time are unchanged (not read again).
    cache = DigestCache(tmp_path / "digests.json")
    cache.digest(f)
    cache.save()
    cache = DigestCache(tmp_path / "digests.json")
    cache._entries[os.path.abspath(f)][2] = "pinned"
    assert cache.digest(f) == "pinned"


def test_each_subject_hemisphere_and_role_has_its_own_digest(tmp_path):
    generate(tmp_path / "data", tmp_path / "withheld", TINY)
    c = config()
    c["data"] = {"root": str(tmp_path / "data"), "withheld": str(tmp_path / "withheld")}
    from snakemake.utils import validate

    validate(c, str(REPO / "workflow/schemas/config.schema.yaml"))
    dag = Dag(make_plan(c))
    roles = {(role, s, h): dag.data(role, s, h) for role in ("fmri", "rois", "surface", "withheld")
             for s in ("subj01", "subj02") for h in ("lh", "rh")}
    roles.update({(role, s, None): dag.data(role, s) for role in ("images", "pixels") for s in ("subj01", "subj02")})
    assert len(set(roles.values())) == len(roles)
    assert combine(1) != combine(2)
