"""Bad configs: every mistake is reported at DAG build, before any job runs, naming the key.

Schema problems come from nsdflow.config.check_config (all at once, with a "did you mean" and the
valid choices); inconsistencies between sections from nsdflow.workflow.make_plan.
"""

import copy
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, nsdflow_env
from nsdflow.config import ConfigError, check_config, config_problems
from nsdflow.workflow import make_plan

TINY = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())


def problems_of(edit):
    config = copy.deepcopy(TINY)
    edit(config)
    return config_problems(config)


@pytest.mark.parametrize("edit, expected", [
    # unknown keys, with the closest valid one and the list
    (lambda c: c["split"].update(val_fracton=0.2),
     "split.val_fracton: unknown key (did you mean 'val_fraction'?); valid keys: val_fraction, seed"),
    (lambda c: c.update(modles={}), "modles: unknown key (did you mean 'models'?)"),
    (lambda c: c["backbones"]["alex"].update(layer={}), "backbones.alex.layer: unknown key (did you mean 'layers'?)"),
    # wrong types
    (lambda c: c["split"].update(val_fraction="ten percent"), "split.val_fraction: expected a number, got 'ten percent'"),
    (lambda c: c["extraction"].update(threads=2.5), "extraction.threads: expected an integer, got 2.5"),
    (lambda c: c["models"]["alex_ridge"].update(features="alex/features.5"),
     "models.alex_ridge.features: expected a list, got 'alex/features.5'"),
    (lambda c: c["data"].update(subjects="1,2"), "data.subjects: expected 'all' or a list, got '1,2'"),
    (lambda c: c["data"].update(subjects=[0]), "data.subjects[0]: 0 must be >= 1"),
    # values out of range or not among the choices
    (lambda c: c["split"].update(val_fraction=0.9), "split.val_fraction: 0.9 must be <= 0.5"),
    (lambda c: c["backbones"]["alex"].update(kind="resnet"), "backbones.alex.kind: 'resnet' is not one of"),
    (lambda c: c["regions"].update(classes=["floc-place"]),
     "regions.classes[0]: 'floc-place' is not one of prf-visualrois, floc-bodies, floc-faces, floc-places, "
     "floc-words, streams (did you mean 'floc-places'?)"),
    (lambda c: c["backbones"]["alex"]["layers"].update({"features.2": {"pool": "max"}}),
     "backbones.alex.layers.features.2.pool: 'max' does not have the expected form"),
    (lambda c: c["backbones"]["alex"]["weights"].update(init="imagenet"),
     "backbones.alex.weights.init: 'imagenet' is not one of random, checkpoint, pretrained"),
    # missing or empty
    (lambda c: c.update(models={}), "models: needs at least 1 entry, got none"),
    (lambda c: c["backbones"]["alex"].pop("weights"), "backbones.alex.weights: required key is missing"),
    (lambda c: c["models"]["alex_ridge"].update(features=[]), "models.alex_ridge.features: needs at least 1 item"),
    (lambda c: c["backbones"].update({"my clip": c["backbones"]["clip"]}),
     "backbones: the name 'my clip' may only use letters, digits"),
])
def test_schema_problem_names_the_key(edit, expected):
    found = problems_of(edit)
    assert any(expected in p for p in found), f"{expected!r} not in {found}"


def test_every_problem_reported_at_once():
    def edit(c):
        c["split"]["val_fracton"] = 0.2
        c["backbones"]["alex"]["kind"] = "resnet"
        c["extraction"]["threads"] = "two"

    config = copy.deepcopy(TINY)
    edit(config)
    with pytest.raises(ConfigError) as info:
        check_config(config, source="config.yaml")
    msg = str(info.value)
    assert msg.startswith("config.yaml: 3 problems (`nsdflow config-help` describes every key)")
    assert msg.count("\n  - ") == 3


def test_shipped_configs_have_no_problems():
    for path in ("config.yaml", "config/algonauts.yaml", "tests/configs/tiny.yaml"):
        assert config_problems(yaml.safe_load((REPO / path).read_text())) == [], path


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["models"]["alex_ridge"].update(features=["vgg/fc7"]),
     "models.alex_ridge.features: 'vgg/fc7' names backbone 'vgg', which is not configured; backbones: alex, clip"),
    (lambda c: c["models"]["alex_ridge"].update(features=["alex/features.2"]),
     "backbone 'alex' stores no layer 'features.2'; add it under backbones.alex.layers (stored: features.5)"),
    (lambda c: c["backbones"]["alex"].update(weights={"init": "checkpoint", "path": "/data/alexnet.pth"}),
     "backbones.alex.weights.path: /data/alexnet.pth does not exist (weights are never downloaded"),
    (lambda c: c["backbones"]["alex"].update(weights={"init": "checkpoint"}),
     "backbones.alex.weights: init is checkpoint but path is not set"),
    (lambda c: c["backbones"]["alex"].update(weights={"init": "pretrained", "tag": "imagenet"}),
     "backbones.alex.weights: init pretrained (an open_clip tag) is for clip backbones"),
    (lambda c: c.update(submission={"model": "best"}),
     "submission.model: 'best' is not a configured model; models: alex_ridge, clip_ridge"),
])
def test_plan_problem_names_the_key(edit, expected):
    config = copy.deepcopy(TINY)
    edit(config)
    with pytest.raises(ConfigError) as info:
        make_plan(config)
    assert expected in str(info.value)


def test_snakemake_stops_before_any_job(tmp_path):
    """A bad config fails the DAG build with our message: no job starts, nothing is written."""
    config = copy.deepcopy(TINY)
    config["split"]["val_fracton"] = 0.2
    config["regions"]["classes"] = ["floc-place"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), "--cores", "1"],
        capture_output=True, text=True, env=nsdflow_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "split.val_fracton: unknown key (did you mean 'val_fraction'?)" in out
    assert "regions.classes[0]: 'floc-place' is not one of" in out
    assert "Failed validating" not in out  # not jsonschema's dump
    assert not (tmp_path / "results").exists()
