# Two commands a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean-data

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the versions served from this machine's disk (others download gigabytes)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

# the quick subset for development (< 2 min on 2 idle cores): no slow, multi-process, SLURM or GPU tests
test-fast: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow and not dist and not slurm and not gpu" --ignore=tests/integration tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-data:
	rm -rf shards/synthetic runs/demo
