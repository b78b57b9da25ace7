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
from nsdflow.plan import make_plan

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


# ----------------------------------------------------------------------------- backbone preflight
# Layer names, pooling and checkpoints need the network itself: the check_backbone job builds each
# backbone once on the CPU and pools one image through it, before any extraction job is queued.

ALEX = {"kind": "alexnet", "weights": {"init": "random", "seed": 0}, "layers": {"features.5": {"pool": "avg2"}}}


def test_preflight_reports_what_each_layer_stores():
    from nsdflow.features.preflight import check_backbone

    info = check_backbone("alex", {**ALEX, "layers": {"features.5": {"pool": "avg2"}, "classifier.5": {"pool": "full"}}})
    assert info["layers"]["features.5"] == {"pool": "avg2", "layout": "map", "shape": [192, 13, 13], "width": 768}
    assert info["layers"]["classifier.5"]["width"] == 4096
    assert info["weights"] == {"init": "random", "seed": 0}


@pytest.mark.parametrize("layers, expected", [
    ({"features.99": {"pool": "avg2"}}, r"has no layer 'features\.99'; valid layers: features\.0, features\.1"),
    ({"features.5": {"pool": "cls"}}, r"backbones\.alex\.layers\.features\.5\.pool: pooling 'cls' needs a token layer"),
    ({"classifier.5": {"pool": "avg2"}}, r"backbones\.alex\.layers\.classifier\.5\.pool: pooling 'avg2' needs a spatial"),
])
def test_preflight_names_the_bad_layer_or_pooling(layers, expected):
    from nsdflow.features.backbones import BackboneError
    from nsdflow.features.preflight import check_backbone

    with pytest.raises(BackboneError, match=expected):
        check_backbone("alex", {**ALEX, "layers": layers})


def test_preflight_refuses_a_checkpoint_of_another_network(tmp_path):
    import torch
    import torchvision

    from nsdflow.features.backbones import BackboneError
    from nsdflow.features.preflight import check_backbone

    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    spec = {**ALEX, "weights": {"init": "checkpoint", "path": str(resnet)}}
    with pytest.raises(BackboneError, match=r"resnet18\.pth does not hold AlexNet weights"):
        check_backbone("alex", spec)
    alexnet = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), alexnet)
    sam = {"kind": "sam", "model": "vit_b", "input_size": 64, "weights": {"init": "checkpoint", "path": str(alexnet)},
           "layers": {"neck": {"pool": "avg2"}}}
    with pytest.raises(BackboneError, match=r"alexnet\.pth does not hold SAM vit_b weights"):
        check_backbone("sam", sam)
    ok = check_backbone("alex", {**ALEX, "weights": {"init": "checkpoint", "path": str(alexnet)}})
    assert ok["weights"]["sha256"] and ok["weights"]["path"] == str(alexnet)


@pytest.mark.e2e
def test_a_bad_layer_stops_the_run_before_any_extraction(tmp_path):
    config = copy.deepcopy(TINY)
    config["backbones"]["alex"]["layers"] = {"features.55": {"pool": "avg2"}}
    config["models"]["alex_ridge"]["features"] = ["alex/features.55"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--show-failed-logs"],
        capture_output=True, text=True, env=nsdflow_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "has no layer 'features.55'; valid layers: features.0" in out
    assert not list((tmp_path / "results/features").glob("*.shards")), "an extraction job started"
