# tfward: `make run` starts the daemon on the example config; `make test` runs the tests.
# Both set up .venv themselves on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast browser fuzz bench soak check-config lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tfward serve examples/tfward.toml

# Everything, as CI runs it: lint, types, then every test, three at a time (pytest-xdist: most
# tests wait on terraform and real processes, so three share two cores well). The storage-fault
# tests need root, as CI runs.
test: $(STAMP) lint browser
	$(PY) -m pytest -q -n 3
	TFWARD_TEST_DATABASE=postgresql $(PY) -m pytest -q -n 3 $(PG_SUITES)

# The suites that run a second time on PostgreSQL (a real server from the pgserver wheel,
# tests/postgres.py); tests/daemon/test_cluster.py runs on it in the first pass.
PG_SUITES := tests/store tests/releases/test_store.py tests/engine tests/actors/test_fault_matrix.py \
	tests/daemon/test_crash_safety.py

# The developer's loop (about 3 minutes on 2 cores): every test but the long real-terraform suites
# marked `slow` (tests/conftest.py says which).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 3

# The web page's browser tests (tests/daemon/web/test_browser.py) drive Debian's chromium with
# chromium-driver: installed here when missing and make runs as root (as CI does); otherwise make
# stops with one line saying what to install. Under CI=true a missing browser fails the tests.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "the browser tests need Debian's chromium and chromium-driver: run 'sudo apt-get install chromium chromium-driver', then make test again" >&2; \
		exit 2; \
	fi

# schemathesis against a daemon on a copy of the example config (scripts/fuzz.py), with every
# check schemathesis has; bounded to a few minutes.
# More options: make fuzz FUZZ_ARGS='--max-examples 100 --seed 1'
FUZZ_CHECKS ?= all
fuzz: $(STAMP)
	$(VENV)/bin/schemathesis --version >/dev/null 2>&1 || $(PY) -m pip install --quiet -e '.[fuzz]'
	$(PY) scripts/fuzz.py --checks $(FUZZ_CHECKS) $(FUZZ_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check tfward tests bench scripts
	$(VENV)/bin/mypy --strict tfward
	$(VENV)/bin/mypy tests

check-config: $(STAMP)
	$(VENV)/bin/tfward check-config examples/tfward.toml

bench: $(STAMP)
	$(PY) bench/run_overhead.py
	$(PY) bench/queue_latency.py
	$(PY) bench/log_capture.py
	$(PY) bench/scale_workspaces.py
	$(PY) bench/api_latency.py
	$(PY) bench/throughput.py
	$(PY) bench/cluster.py

soak: $(STAMP)
	$(PY) bench/soak.py --kills 50

clean:
	rm -rf $(VENV) var .pytest_cache
