# Two set-up commands: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
export MULTITEACHER_DATA ?= $(abspath ../shared/data)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test lint coverage models bench reliability clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first (a bare `torch` requirement could pull a multi-GB CUDA build)
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

demo: install
	$(BIN)/multiteacher run recipes/example.yaml --run-dir runs/demo-example --set name=demo-example \
	  || $(BIN)/multiteacher run --resume runs/demo-example
	@echo "report: runs/demo-example/report.md"

lint: install
	$(BIN)/ruff check src tests bench scripts

test: install lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

coverage: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest --cov=multiteacher --cov-report=term

bench: install
	OMP_NUM_THREADS=1 $(BIN)/python -m bench.run_all

reliability: install
	OMP_NUM_THREADS=1 $(BIN)/python scripts/reliability.py --trials 10

clean:
	rm -rf runs .pytest_cache .ruff_cache .coverage
