# tfward: `make run` starts the daemon on the example config; `make test` runs the tests.
# Both set up .venv themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench check-config lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tfward serve examples/tfward.toml

test: $(STAMP)
	$(PY) -m pytest -q

check-config: $(STAMP)
	$(VENV)/bin/tfward check-config examples/tfward.toml

bench: $(STAMP)
	$(PY) bench/run_overhead.py
	$(PY) bench/queue_latency.py
	$(PY) bench/log_capture.py

clean:
	rm -rf $(VENV) var .pytest_cache
