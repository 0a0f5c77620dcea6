# The two commands of the README: `make test` (set up, build, lint, test) and `make bench`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed

.PHONY: deps build lint test bench clean

$(DEPS_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

deps: $(DEPS_STAMP)

# The extension is built in place (ninja keeps rebuilds incremental) and the build log, with ptxas
# register/spill reports, is kept in build/. The editable install only adds the `rtmo` command.
build: deps
	mkdir -p build
	$(PY) setup.py -q build_ext --inplace 2>&1 | tee build/build.log
	RTMO_SKIP_EXT=1 $(PY) -m pip install -q --no-deps --no-build-isolation -e .

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# pytest exits 5 when it collects no test; that is not a failure of the build. The stop-signal
# tests send signals to their own process, so they run in an interpreter of their own: after the
# rest of the suite, a signal can land on a thread pool another test left behind and crash it.
test: build lint
	$(PY) -m pytest tests --ignore=tests/test_signals.py || { rc=$$?; [ $$rc -eq 5 ] || exit $$rc; }
	$(PY) -m pytest tests/test_signals.py

bench: build
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf build rtmo_kernels/_C*.so *.egg-info
