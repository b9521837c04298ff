# The two promises of the README: `make devnet` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint devnet venv clean bench

venv: $(STAMP)

# the C accelerators are built by the editable install: rebuild when they change
$(STAMP): pyproject.toml setup.py chain/_canonical.c contracts/_treecore.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

devnet: $(STAMP)
	$(PY) -m devnet up $(ARGS)

bench: $(STAMP)
	$(PY) -m devnet bench-state

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
