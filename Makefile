# Quickstart targets. `make demo` and `make test` each set up the virtual environment first.
# Setup reuses a torch that the system python already has (through --system-site-packages);
# otherwise it installs torch==2.13.0 (the offline CPU build on this kind of machine) before
# the project, so pip never resolves torch from the registry (that would pull CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.damp-installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "setup: reusing the system torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	@$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/damp demo --out runs/demo

test: setup
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
