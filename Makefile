# nsdflow: `make demo` installs and runs the demo end to end; `make test` installs and runs the tests.
# Everything goes into a virtual environment (.venv); torch comes from this machine's disk if it is there.

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
CORES ?= all

.PHONY: install system-packages demo test report bench-dag clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES)

report: install
	PATH="$(BIN):$$PATH" snakemake --report report.html

# Debian packages some tests need (Chromium for the report, SLURM for the cluster profile):
# installed when missing and possible (root + apt), otherwise those tests skip with the reason.
system-packages:
	.ci/install-system-packages

test: install system-packages
	PATH="$(BIN):$$PATH" pytest

# Dry run and no-op rerun of a full-size Algonauts DAG on a synthetic data root (BENCHMARKS.md).
bench-dag: install
	PATH="$(BIN):$$PATH" python bench/dag_scale.py

clean:
	rm -rf results logs benchmarks .snakemake report.html
