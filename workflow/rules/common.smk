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

from nsdflow.workflow import ConfigError, canonical, code_version, data_inputs, make_plan


# Jobs run the `nsdflow` command of the environment Snakemake runs in (a venv need not be activated);
# with --use-conda the rule's environment comes first on PATH instead.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
os.environ["NSDFLOW_WORKFLOW_DIR"] = str(workflow.basedir)
ENV = "../../envs/nsdflow.yaml"

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
    """What a subject's validation depends on: the demo's manifest, or the real files."""
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
    if PLAN.ensembles:
        outputs.append("results/scores/selection.csv")  # which model won where (readouts.smk)
    return outputs
