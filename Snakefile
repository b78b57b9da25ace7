# nsdflow: predict visual-cortex fMRI responses to natural images (Algonauts 2023 / NSD).
# Stages: data -> features -> readouts -> evaluate -> report, submission. Logic lives in src/nsdflow.
from snakemake.utils import min_version

min_version("9.27")


# The config a user passes is the config that runs: with --configfile, the shipped demo config is
# not read at all (Snakemake would otherwise merge the user's file into it, and the demo's models
# and backbones would join the run); without one, the demo config runs.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/readouts.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/submission.smk"


rule all:
    input:
        final_outputs(),
    default_target: True


# The result on screen when a whole run succeeds: the leaderboard and where everything is
# (`nsdflow leaderboard` prints it again on request).
onsuccess:
    show_leaderboard(workflow)
