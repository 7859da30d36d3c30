# trackware developer commands. Everything installs itself: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
CORE_VENV := .venv-core
BENCH_VENV := .venv-bench
PY := $(VENV)/bin/python
CORE_PY := $(CORE_VENV)/bin/python
BENCH_PY := $(BENCH_VENV)/bin/python
PYTEST_ARGS ?=
OLDEST_VENV := .venv-oldest
OLDEST_PY := $(OLDEST_VENV)/bin/python
CALLGRIND_ARGS ?=

.PHONY: test lint typecheck test-core test-integrations demo demo-serve bench bench-callgrind clean
.PHONY: test-oldest

# Full environment: every extra plus the dev tools and the frameworks
# (PEP 735 dependency groups in pyproject.toml: pip >= 25.1, hence the upgrade).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]' --group dev --group frameworks
	touch $@

# Core environment: no framework installed, so tests/ proves `import trackware`
# never needs flask or asgiref.
$(CORE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_PY) -m pip install --quiet --upgrade pip
	$(CORE_PY) -m pip install --quiet -e . --group dev
	touch $@

$(BENCH_VENV)/.installed: pyproject.toml bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --upgrade pip
	$(BENCH_PY) -m pip install --quiet -e '.[all]' -r bench/requirements.txt
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test-core: $(CORE_VENV)/.installed
	$(CORE_PY) -m pytest tests $(PYTEST_ARGS)

# pytest exits 5 when it collects nothing; that is only acceptable while the
# integrations folder holds no suite yet, and it says so.
test-integrations: $(VENV)/.installed
	$(PY) -m pytest integrations $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$$(find integrations -name 'test_*.py')" ]; then \
		echo "integrations: no suites yet"; exit 0; fi; exit $$rc

# The oldest versions trackware claims to support (the `oldest` dependency
# group pins them: Flask/Werkzeug 2.3, asgiref 3.7, Starlette 0.37): the Flask
# and Starlette suites, without the process-level (slow) tests, run there.
$(OLDEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_PY) -m pip install --quiet --upgrade pip
	$(OLDEST_PY) -m pip install --quiet -e . --group oldest
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_PY) -m pytest integrations/flask integrations/test_decorators_flask.py \
		integrations/asgi/test_starlette.py integrations/asgi/test_cookie_forgery.py \
		integrations/asgi/test_routes.py -m "not slow" $(PYTEST_ARGS)

# The three suites run side by side, each in its own environment: most of their
# time is spent waiting on the subprocesses, servers and sockets they test, not
# on the CPU. Each suite's output is printed whole when it ends.
test: lint typecheck
	$(MAKE) --no-print-directory -j3 --output-sync=target test-core test-integrations test-oldest

demo: $(VENV)/.installed
	$(PY) example_apps/demo.py

# The demo, then the shop, the store and the emulators stay up to click through.
demo-serve: $(VENV)/.installed
	$(PY) example_apps/demo.py --serve

# The wall-clock tables, then the instruction counts under callgrind.
bench: $(BENCH_VENV)/.installed
	$(BENCH_PY) bench/run.py
	$(BENCH_PY) bench/callgrind.py $(CALLGRIND_ARGS)

# Only the deterministic rows; compare with another checkout by
# `make bench-callgrind CALLGRIND_ARGS="--against ../old --fail-over 5"`.
bench-callgrind: $(BENCH_VENV)/.installed
	$(BENCH_PY) bench/callgrind.py $(CALLGRIND_ARGS)

clean:
	rm -rf $(VENV) $(CORE_VENV) $(BENCH_VENV) build dist *.egg-info
	rm -rf $(OLDEST_VENV)
