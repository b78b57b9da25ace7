# nsdflow: predict visual-cortex fMRI responses to natural images (Algonauts 2023 / NSD).
# Stages: data -> features -> readouts -> evaluate -> submission. Logic lives in src/nsdflow.
from snakemake.utils import min_version

min_version("9.27")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/readouts.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/submission.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
