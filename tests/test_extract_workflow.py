"""The feature stage as Snakemake runs it: sharded jobs, the combine step, what a config change reruns."""

import json

import numpy as np
import pytest
import yaml
from conftest import REPO, job_counts
from conftest import snakemake_log as snakemake

from nsdflow.dag import Dag
from nsdflow.features.extract import extract_features
from nsdflow.features.store import FeatureStore
from nsdflow.plan import ConfigError, make_plan

TINY = REPO / "tests" / "configs" / "tiny.yaml"
TARGETS = ["results/features/alex.json", "results/features/alex2.json"]


def features_config(**extraction):
    """The tiny config with two AlexNet backbones (fast on a CPU) and sharded extraction."""
    config = yaml.safe_load(TINY.read_text())
    config["extraction"] = {**config.get("extraction", {}), "shards": 2, **extraction}
    alex = config["backbones"]["alex"]
    config["backbones"] = {"alex": {**alex, "chunk": 8},
                           "alex2": {**alex, "chunk": 8, "layers": {"features.2": {"pool": "avg2"}}}}
    config["models"] = {"alex_ridge": {"readout": "ridge", "features": ["alex/features.5"]},
                        "alex2_ridge": {"readout": "ridge", "features": ["alex2/features.2"]}}
    config["submission"] = {"model": "alex_ridge"}
    return config


def test_plan_shards_and_cross_checks():
    plan = make_plan(features_config())
    assert plan.shards == 2
    assert Dag(plan).input_paths("combine_features", backbone="alex")["shards"] == [
        "results/features/alex.shards/0-of-2.json", "results/features/alex.shards/1-of-2.json"]
    assert plan.weights_file("alex") is None
    bad = features_config()
    bad["backbones"]["alex"] = {"kind": "dinov2", "input_size": 100, "weights": {"init": "random"},
                                "layers": {"features.5": {"pool": "cls"}}}
    with pytest.raises(ConfigError, match=r"backbones\.alex\.input_size: 100 is not a multiple of 14"):
        make_plan(bad)
    bad = features_config()
    bad["images"] = {"source": "hdf5", "hdf5": "/no/nsd_stimuli.hdf5"}
    with pytest.raises(ConfigError, match=r"images\.hdf5: /no/nsd_stimuli\.hdf5 does not exist"):
        make_plan(bad)


@pytest.mark.e2e
@pytest.mark.slow
def test_sharded_dag_and_a_pooling_change_reextracts_that_backbone_only(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(features_config()))
    snakemake(workdir, *TARGETS)
    manifest = json.loads((workdir / "results/features/alex.json").read_text())
    index = np.loadtxt(workdir / "results/images/index.csv", delimiter=",", skiprows=1, usecols=3, dtype=np.int64)
    assert manifest["shards"] == 2 and manifest["n_images"] == len(np.unique(index)) < len(index)
    assert sum(s["extracted_images"] for s in manifest["per_shard"]) == manifest["n_images"]
    # The two shards wrote exactly what one unsharded job writes.
    config = features_config()
    extract_features("alex", config["backbones"]["alex"], workdir / "results/images/cache.zarr",
                     tmp_path / "whole.zarr", tmp_path / "whole.json", device="cpu", threads=2)
    sharded, whole = FeatureStore(workdir / "results/features/alex.zarr"), FeatureStore(tmp_path / "whole.zarr")
    np.testing.assert_array_equal(sharded.read("features.5", sharded.nsd_ids), whole.read("features.5", whole.nsd_ids))

    assert "Nothing to be done" in snakemake(workdir, "--dry-run", *TARGETS)
    # Re-pooling one backbone reruns its shards and its combine step, and nothing of the other.
    config["backbones"]["alex"]["layers"]["features.5"]["pool"] = "avg1"
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(workdir, "--dry-run", *TARGETS)
    assert job_counts(out) == {"changes": 1, "check_backbone": 1, "extract": 2, "combine_features": 1}
    assert "backbone=alex," in out and "backbone=alex2" not in out


def test_dry_run_reads_nsd_hdf5_when_configured(tmp_path):
    import h5py

    h5 = tmp_path / "nsd stimuli.hdf5"  # a space: the path must be quoted in the command
    with h5py.File(h5, "w") as f:
        f.create_dataset("imgBrick", data=np.zeros((2, 8, 8, 3), np.uint8))
    config = features_config(shards=1)
    config["images"] = {"source": "hdf5", "hdf5": str(h5)}
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(workdir, "--dry-run", "--printshellcmds", "results/images/cache.json")
    assert f"--source hdf5 --hdf5 '{h5}' --hdf5-dataset imgBrick --hdf5-index-base auto" in out
