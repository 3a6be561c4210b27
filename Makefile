# The README's two commands: `make demo` and `make test`. Both create the venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# pytest workers (tests run one torch thread each, so one worker per core)
TEST_WORKERS ?= auto

.PHONY: demo test lint format install clean bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,ants,deploy,review,cohort]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medimg demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/bench_dicom_load.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
