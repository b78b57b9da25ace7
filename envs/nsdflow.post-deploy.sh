#!/usr/bin/env bash
# Run by Snakemake inside the new conda environment: install nsdflow from the workflow's checkout
# (common.smk exports NSDFLOW_WORKFLOW_DIR), without touching the dependencies above.
set -euo pipefail
python -m pip install --no-deps -e "${NSDFLOW_WORKFLOW_DIR:?run through snakemake}"
