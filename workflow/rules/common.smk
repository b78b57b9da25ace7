# Shared setup: config validation, the plan, the DAG's inputs and rerun keys, wildcard constraints.
#
# What reruns is decided by keys (nsdflow.dag): each job carries the key of its code, its config and
# the content of exactly the data and results it reads (`key(rule)`, a param). Its inputs
# (`inputs(rule)`) are all `ancient`: Snakemake runs a job after them, but a rerun of one of them
# does not rerun it, nor does a file's time. So a job reruns when its own key changed, and then
# only. Snakemake does not check any job below one it reruns, and reaches those only through inputs
# that are not `ancient`; so every job that must run (its key changed, or an output is missing or
# incomplete) takes `.snakemake/nsdflow/changes.json` as an ordinary input, which rule `changes`
# writes first whenever any job must run: from it, Snakemake reaches them all.
import atexit
import os
from collections import Counter
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

try:
    import nsdflow  # noqa: F401 - installed (pip install -e .)
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.io import IOFile

from nsdflow import results
from nsdflow.config import ConfigError, check_config
from nsdflow.dag import Dag
from nsdflow.digests import DigestCache
from nsdflow.plan import canonical, make_plan


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

DIGESTS = DigestCache()
atexit.register(DIGESTS.save)
GRAPH = Dag(PLAN, DIGESTS)
HEMIS = ["lh", "rh"]
CHANGES = results.output("changes")


def recorded_params(path):
    """The params Snakemake recorded for an output (None without a record)."""
    record = workflow.persistence.metadata(IOFile(path)) if workflow.persistence is not None else None
    return record.params if record is not None else None


def incomplete_outputs(paths):
    """Those of ``paths`` that a killed job left marked incomplete (Snakemake's own markers)."""
    try:
        return set(workflow.persistence._filter_incomplete_keys(paths))
    except (AttributeError, TypeError):  # no persistence here (a remote job): nothing to add
        return set()


_to_run = []


def changed_jobs():
    """The jobs that must run, and why: "key" or "missing" (nsdflow.dag.Dag.to_run; once per DAG)."""
    if not _to_run:
        _to_run.append(GRAPH.to_run(recorded_params, incomplete_outputs) if workflow.persistence is not None else {})
    return _to_run[0]


def inputs(rule):
    """A rule's inputs (for `unpack`): the DAG's, each `ancient`, and results/changes.json, an
    ordinary input of the jobs whose key changed (see the top of this file)."""

    def fn(wildcards):
        wc = dict(wildcards.items())
        paths = GRAPH.input_paths(rule, **wc)
        out = {k: ancient(v) if isinstance(v, str) else [ancient(x) for x in v] for k, v in paths.items()}
        job = (rule, tuple(sorted((k, str(v)) for k, v in wc.items() if k in results.wildcards_of(rule))))
        out["changes"] = CHANGES if job in changed_jobs() else ancient(CHANGES)
        return out

    return fn


def changes_stamp(wildcards):
    """The changes rule's param: the changed jobs per rule and the time (so that it runs) whenever
    some job's key changed; else what was recorded (so that it does not). A job whose output is
    missing needs no changes run to be reached: Snakemake follows a missing file through any input,
    ancient or not, and a job above it reruns only if its own output is missing or its key changed."""
    jobs = changed_jobs()
    if "key" in jobs.values():
        import time

        return canonical({"jobs": Counter(rule for (rule, _), why in jobs.items() if why == "key"),
                          "missing": sum(why == "missing" for why in jobs.values()), "planned": time.time()})
    import ast

    recorded = recorded_params(CHANGES)  # Snakemake records each param's repr
    return ast.literal_eval(recorded[0]) if recorded else canonical({"jobs": {}, "planned": None})


def key(rule):
    """A rule's rerun key (a param): see nsdflow.dag."""
    return lambda wildcards: GRAPH.key(rule, **dict(wildcards.items()))


def out(rule, name=None):
    return results.output(rule, name)


def names(values):
    """A wildcard constraint matching exactly these names (never matching if there are none)."""
    import re

    return "|".join(re.escape(str(v)) for v in values) or "(?!)"


wildcard_constraints:
    subject=r"subj\d{2}",
    hemi="lh|rh",
    backbone=names(PLAN.backbones),


def show_leaderboard(workflow):
    """Print the leaderboard after a successful run whose targets were the whole run (rule all)."""
    from nsdflow.evaluate.leaderboard import leaderboard_text

    if any(job.rule.name == "all" for job in workflow.dag.targetjobs):
        text = leaderboard_text(".", config)
        if text is not None:
            print("\n" + text, flush=True)


def final_outputs():
    """What a run makes: the tables, page, figures, submission and provenance (nsdflow.dag.Dag.targets)."""
    return [target.path for target in GRAPH.targets()]


# Which jobs' keys changed since they ran: the first job of a run that changes anything.
rule changes:
    output:
        CHANGES,
    params:
        stamp=changes_stamp,
    conda:
        ENV
    log:
        results.log("changes"),
    shell:
        "nsdflow changes --stamp {params.stamp:q} --out {output:q} > {log} 2>&1"


# With a cluster executor (profiles/slurm) these run on the submitting node instead of as jobs:
# each is seconds of work on small files, where a batch job would wait in the queue for longer.
localrules:
    all,
    changes,
    index_images,
    split,
    merge,
    score_vertices,
    summarize,
    scores_page,
    plot_roi_bars,
    plot_models,
    plot_brain_map,
    plot_attention,
    provenance,
    submission,
    ensemble,
    selection,
