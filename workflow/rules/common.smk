# Shared setup: config validation, the resolved plan, wildcard constraints, path helpers.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

try:
    import nsdflow  # noqa: F401 - installed (pip install -e .)
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from nsdflow.config import ConfigError, check_config
from nsdflow.workflow import canonical, code_version, data_fingerprint, data_inputs, make_plan


# Jobs run the `nsdflow` command of the environment Snakemake runs in (a venv need not be activated);
# with --use-conda the rule's environment comes first on PATH instead.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
os.environ["NSDFLOW_WORKFLOW_DIR"] = str(workflow.basedir)
ENV = "../../envs/nsdflow.yaml"

# Every problem of the config at once, in words (Snakemake's validate stops at the first and dumps
# the schema); validate then fills in the schema's defaults.
try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
validate(config, "../schemas/config.schema.yaml")

try:
    PLAN = make_plan(config)
except ConfigError as err:
    raise WorkflowError(f"config: {err}") from None
for _warning in PLAN.warnings:
    logger.warning(f"nsdflow: {_warning}")

HEMIS = ["lh", "rh"]
DEMO_MANIFEST = "results/demo/withheld/demo_manifest.json"
IMAGE_STORE = "results/images/cache.zarr"


wildcard_constraints:
    subject=r"subj\d{2}",
    hemi="lh|rh",
    model=r"[A-Za-z0-9_.-]+",
    backbone=r"[A-Za-z0-9_.-]+",
    region=r"[A-Za-z0-9_.-]+",


def summary_json(subject):
    return f"results/data/{subject}.json"


def feature_store(backbone):
    return f"results/features/{backbone}.zarr"


def raw_data(wildcards):
    """What a subject's validation depends on: the demo's manifest, or the real data's small files
    (the large ones enter through the data_fingerprint param: see nsdflow.workflow.data_inputs)."""
    return [DEMO_MANIFEST] if PLAN.demo else data_inputs(PLAN, wildcards.subject)


def withheld_inputs(wildcards):
    return [DEMO_MANIFEST] if PLAN.demo else []


def final_outputs():
    outputs = [
        "results/scores/summary.csv",
        "results/scores/leaderboard.csv",
        "results/plots/model_comparison.png",
        "results/submission/submission.zip",
    ]
    outputs += expand("results/plots/roi_median_r/{subject}_{hemi}.png", subject=PLAN.subjects, hemi=HEMIS)
    # Evaluation and report (issue 5): score tables as a page, brain maps, the checked zip, provenance.
    outputs += ["results/scores/scores.html", "results/submission/check.txt", "results/report/provenance.html"]
    if config["plots"]["brain_maps"]["enabled"]:
        outputs += expand("results/plots/brain_maps/{model}/{subject}.png", model=PLAN.scored_models,
                          subject=PLAN.subjects)
    if PLAN.ensembles:
        outputs.append("results/scores/selection.csv")  # which model won where (readouts.smk)
    return outputs


# With a cluster executor (profiles/slurm) these run on the submitting node instead of as jobs:
# each is seconds of work on small files, where a batch job would wait in the queue for longer.
localrules:
    all,
    image_index,
    split,
    merge,
    score,
    summarize,
    plot_roi_bars,
    plot_models,
    plot_brain_map,
    provenance,
    submission,
    ensemble,
    selection,
