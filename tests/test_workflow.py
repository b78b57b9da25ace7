"""The config plan (no Snakemake) and the whole DAG end to end on a tiny config (Snakemake)."""

import json
import re
import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import yaml
from conftest import REPO, nsdflow_env
from conftest import run_snakemake as snakemake

from nsdflow.plan import ConfigError, make_plan
from nsdflow.readouts.regions import UNASSIGNED

TINY = REPO / "tests" / "configs" / "tiny.yaml"


def tiny_config():
    return yaml.safe_load(TINY.read_text())


def validated(config):
    """``config`` with the schema's defaults filled in, as Snakemake's validate leaves it."""
    from snakemake.utils import validate

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


# ----------------------------------------------------------------------------- plan


def test_plan_of_tiny_config():
    plan = make_plan(tiny_config())
    assert plan.demo and plan.subjects == ["subj01", "subj02"]
    assert plan.regions == ["OPA", "PPA", "RSC", "early", "midventral", "midlateral", "midparietal", "ventral",
                            "lateral", "parietal", UNASSIGNED]
    assert plan.model_backbones("alex_ridge") == ["alex"]
    assert json.loads(plan.fit_spec("clip_ridge"))["params"]["cv"] == "loo"
    # Readout params that the cached design does not read stay out of its spec.
    assert "alphas" not in plan.design_spec("clip_ridge")


def test_a_model_fitted_exactly_as_another_reads_its_fits():
    """A grid that repeats a model (or one model under two names) costs one fit: the repeat's
    merge reads the first model's fit jobs, and no fit job of the repeat exists."""
    from nsdflow.dag import Dag

    config = tiny_config()
    config["models"]["alex_again"] = dict(config["models"]["alex_ridge"])
    config["models"]["alex_other"] = {**config["models"]["alex_ridge"], "params": {"alphas": [1.0, 10.0]}}
    plan = make_plan(validated(config))
    assert plan.fit_model("alex_again") == "alex_ridge"
    assert plan.fit_model("alex_other") == "alex_other"
    jobs = Dag(plan).jobs()
    fitted = {dict(wc)["model"] for rule, wc in jobs if rule == "fit"}
    assert "alex_again" not in fitted and {"alex_ridge", "alex_other"} <= fitted
    merged = {dict(wc)["model"] for rule, wc in jobs if rule == "merge"}
    assert {"alex_again", "alex_ridge", "alex_other"} <= merged


def test_linear_fits_make_leave_one_out_predictions_only_for_an_ensemble_that_reads_them():
    """oof_pred is as large as the fMRI and a third of a ridge fit's arithmetic: a fit makes it
    when an ensemble chooses weights on it (select_on: oof), for every model sharing that fit."""
    def loo(config, model):
        return json.loads(make_plan(validated(config)).fit_spec(model))["loo"]

    config = tiny_config()
    assert not loo(config, "alex_ridge") and not loo(config, "clip_ridge")
    config["ensembles"] = {"mix": {"models": ["alex_ridge", "clip_ridge"], "method": "softmax"}}
    assert loo(config, "alex_ridge") and loo(config, "clip_ridge")
    config["ensembles"]["mix"]["select_on"] = "val"
    assert not loo(config, "alex_ridge")
    config = tiny_config()  # a repeat in the ensemble: the one fit they share makes them
    config["models"]["alex_again"] = dict(config["models"]["alex_ridge"])
    config["ensembles"] = {"mix": {"models": ["alex_again", "clip_ridge"]}}
    plan = make_plan(validated(config))
    assert plan.fit_model("alex_again") == "alex_ridge" and json.loads(plan.fit_spec("alex_ridge"))["loo"]


def test_an_ensemble_that_selects_on_oof_reruns_its_ridge_members_fits_and_no_other():
    from nsdflow.dag import Dag

    def fit_keys(config):
        dag = Dag(make_plan(validated(config)))
        return {m: dag.key("fit", model=m, subject="subj01", hemi="lh", region="PPA") for m in ("alex_ridge", "clip_ridge")}

    config = tiny_config()
    before = fit_keys(config)
    config["ensembles"] = {"mix": {"models": ["alex_ridge", "clip_ridge"], "select_on": "val"}}
    assert fit_keys(config) == before  # weights on the validation split: the fits are as they were
    config["models"]["clip_again"] = dict(config["models"]["clip_ridge"])
    config["ensembles"] = {"mix": {"models": ["alex_ridge", "clip_again"], "method": "softmax"}}
    after = fit_keys(config)
    assert after["alex_ridge"] != before["alex_ridge"] and after["clip_ridge"] != before["clip_ridge"]
    config["ensembles"] = {"mix": {"models": ["alex_ridge", "clip_again"], "method": "softmax", "select_on": "val"}}
    assert fit_keys(config) == before


def test_brain_maps_are_drawn_for_the_named_models_only():
    from nsdflow.dag import Dag

    config = tiny_config()
    config.setdefault("plots", {})["brain_maps"] = {"models": ["clip_ridge"]}
    plan = make_plan(validated(config))
    drawn = {dict(r.wildcards)["model"] for r in Dag(plan).targets() if r.rule == "plot_brain_map"}
    assert plan.brain_map_models == ["clip_ridge"] and drawn == {"clip_ridge"}
    config["plots"]["brain_maps"] = {"models": ["clip_ridge", "nope"]}
    with pytest.raises(ConfigError, match="plots.brain_maps.models: 'nope' is not a configured model"):
        make_plan(config)
    config["plots"]["brain_maps"] = {"enabled": False, "models": ["clip_ridge"]}
    assert make_plan(config).brain_map_models == []


def test_attention_is_drawn_for_transformer_models_with_roi_queries():
    from nsdflow.dag import Dag

    config = yaml.safe_load((REPO / "tests/configs/tiny_trained.yaml").read_text())
    config["models"]["tokens"] = {**config["models"]["decoder"], "params": {**config["models"]["decoder"]["params"],
                                                                             "queries": "vertex"}}
    plan = make_plan(validated(config))
    targets = [r for r in Dag(plan).targets() if r.rule == "plot_attention"]
    assert plan.attention_models == ["decoder"]  # vertex queries keep no maps; other readouts have none
    assert sorted(dict(r.wildcards)["subject"] for r in targets) == plan.subjects
    step = Dag(plan).step("plot_attention", model="decoder", subject="subj01")
    assert [dict(r.wildcards) for r in step.inputs["fits"]] == [
        {"hemi": "both", "model": "decoder", "region": "subject", "subject": "subj01"}]
    config["plots"]["attention_maps"] = False
    assert make_plan(config).attention_models == []


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["models"]["alex_ridge"].update(features=["vgg/fc7"]), "names backbone 'vgg', which is not configured"),
    (lambda c: c["models"]["alex_ridge"].update(features=["alex/features.2"]), "stores no layer 'features.2'"),
    (lambda c: c["backbones"]["alex"].update(weights={"init": "checkpoint", "path": "/nope.pth"}), "/nope.pth does not exist"),
    (lambda c: c.update(submission={"model": "best"}), "submission.model: 'best' is not a configured model"),
    (lambda c: c.update(data={"root": "/no/such/root"}), "data.root: /no/such/root does not exist"),
    (lambda c: c.update(data={"root": "demo", "subjects": [3]}), "subj03 not available"),
])
def test_plan_errors_name_the_key(edit, message):
    config = tiny_config()
    edit(config)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        make_plan(config)


# ----------------------------------------------------------------------------- end to end


# tiny_run (the DAG on tests/configs/tiny.yaml, once per session) is in conftest.py: the report
# tests render its report too.


@pytest.mark.e2e
def test_dag_produces_scores_and_a_valid_submission(tiny_run):
    workdir, _ = tiny_run
    summary = pd.read_csv(workdir / "results/scores/summary.csv")
    assert set(summary["model"]) == {"alex_ridge", "clip_ridge"}
    assert set(summary["split"]) == {"val", "test"}
    board = pd.read_csv(workdir / "results/scores/leaderboard.csv")
    assert board["challenge_score"].between(0, 100).all()
    alex_test = board.query("model == 'alex_ridge' and split == 'test'").iloc[0]
    assert alex_test["n_vertices"] == summary.query(
        "model == 'alex_ridge' and split == 'test' and subject == 'all' and hemi == 'all' and roi == 'all'"
    )["n_vertices"].iloc[0]
    with zipfile.ZipFile(workdir / "results/submission/submission.zip") as zf:
        assert sorted(zf.namelist()) == [f"subj0{s}/{h}_pred_test.npy" for s in (1, 2) for h in ("lh", "rh")]
    check = subprocess.run([sys.executable, "-m", "nsdflow.cli", "check-submission",
                            str(workdir / "results/submission/submission.zip"), "--data",
                            str(workdir / "results/demo/algonauts")], capture_output=True, text=True, env=nsdflow_env())
    assert check.returncode == 0, check.stdout + check.stderr
    for subject in ("subj01", "subj02"):
        for hemi in ("lh", "rh"):
            assert (workdir / f"results/plots/roi_median_r/{subject}_{hemi}.png").stat().st_size > 10_000
    # Each unique image was extracted once: the store has one row per unique NSD id.
    index = pd.read_csv(workdir / "results/images/index.csv")
    manifest = json.loads((workdir / "results/features/alex.json").read_text())
    assert manifest["n_images"] == index["nsd_id"].nunique() == 2 * (40 + 8) - 10


@pytest.mark.e2e
def test_a_successful_run_ends_with_the_leaderboard_on_screen(tiny_run):
    workdir, proc = tiny_run
    printed = proc.stdout + proc.stderr
    board = pd.read_csv(workdir / "results/scores/leaderboard.csv")
    table = printed[printed.index("leaderboard (results/scores/leaderboard.csv)"):]
    for _, row in board.query("split == 'test'").iterrows():  # every model, with its test score to 2 places
        line = next(line for line in table.splitlines() if line.split()[:1] in ([row["model"]], [row["model"] + " *"])
                    or line.startswith(row["model"] + " "))
        assert f"{row['challenge_score']:.2f}" in line and f"{row['chance_score']:.2f}" in line
    assert "results/submission/submission.zip" in table and "snakemake --report" in table
    # ... and `nsdflow leaderboard` prints the same table again on request
    again = subprocess.run([sys.executable, "-m", "nsdflow.cli", "leaderboard", str(workdir)], capture_output=True,
                           text=True, env=nsdflow_env())
    assert again.returncode == 0 and again.stdout.split("\n\noutputs:")[0] in table


@pytest.mark.e2e
def test_second_run_has_nothing_to_do(tiny_run):
    workdir, _ = tiny_run
    proc = snakemake(workdir, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- schema


SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "config/algonauts.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_validate(path):
    import jsonschema

    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load((REPO / path).read_text()))


@pytest.mark.parametrize("path", ["config.yaml", "config/algonauts.yaml"])
def test_shipped_configs_plan(path):
    """Beyond the schema, the planner's cross-checks (ensemble members, features, grids): the real-data
    template planned on the demo's data root with random weights, as it cannot reach its own paths."""
    config = yaml.safe_load((REPO / path).read_text())
    config["data"] = {**config["data"], "root": "demo", "withheld": None}
    for backbone in config["backbones"].values():
        backbone["weights"] = {"init": "random", "seed": 0}
    plan = make_plan(validated(config))
    assert plan.submission_model in plan.scored_models


def _properties(node, path="", nullable=False):
    """(path, schema, required, inside a section that may be null) of every key."""
    required = set(node.get("required", []))
    for key, sub in node.get("properties", {}).items():
        yield f"{path}.{key}".lstrip("."), sub, key in required, nullable
        yield from _properties(sub, f"{path}.{key}", nullable or "null" in sub.get("type", []))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _properties(extra, f"{path}.<name>", nullable)


def test_every_key_is_described_and_optional_keys_have_defaults():
    keys = list(_properties(SCHEMA))
    assert len(keys) > 40
    for path, sub, required, nullable in keys:
        assert sub.get("description"), f"{path} has no description"
        # Snakemake's validate fills defaults into a section even when it is null (and fails), so
        # the optional keys of a section that may be null say their default in words instead.
        assert required or "default" in sub or (nullable and "default" in sub["description"].lower()) or \
            (nullable and sub.get("type") in ("object", "array")), f"{path} is optional but has no default"


def test_config_help_lists_every_key():
    out = subprocess.run([sys.executable, "-m", "nsdflow.cli", "config-help"], capture_output=True, text=True,
                         check=True).stdout
    for path, *_ in _properties(SCHEMA):
        assert path in out


def test_a_users_config_runs_its_own_models_only(tmp_path):
    """With --configfile, the shipped demo config.yaml is not merged in: its models, backbones and
    ensembles do not join the run."""
    shutil.copy(TINY, tmp_path / "config.yaml")
    out = snakemake(tmp_path, "--dry-run").stdout
    models = set(re.findall(r"model=([\w.-]+)", out))
    backbones = set(re.findall(r"backbone=([\w.-]+)", out))
    assert models == {"alex_ridge", "clip_ridge"}, models
    assert backbones == {"alex", "clip"}, backbones
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    assert not (set(demo["models"]) | set(demo["ensembles"])) - {"clip_ridge"} & models  # the demo's own names
