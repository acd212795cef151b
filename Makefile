# Entry points: `make demo`, `make test` (everything, what CI runs) and `make test-fast`; each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

.PHONY: demo test test-fast bench
demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# under a minute on 2 CPU cores: everything but the tests marked slow
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_generator.py
