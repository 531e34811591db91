# `make demo` and `make test` each set up .venv on a fresh machine (quick when already set up).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_CPU ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-all bench fuzz setup clean browser

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
	    echo "keeping the torch already installed for $(PYTHON)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install -q "$(TORCH_CPU)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bridge demo $(DEMO_ARGS)

# The browser test (tests/test_app.py) drives Debian's chromium; installed best-effort, never failing
# the build: without it that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	    echo "installing chromium for the browser test (best effort)"; \
	    ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver ) \
	      >/dev/null 2>&1 || echo "could not install chromium: the browser test will be skipped"; \
	  fi; } || true

test: $(STAMP) browser
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-all: $(STAMP) browser
	$(PY) -m pytest -q -n 2 -m "" $(PYTEST_ARGS)

# fuzzing of the readers, the shard reader and the config loader (docs/reliability.md): hypothesis,
# then coverage-guided atheris when installed (pip install -e ".[fuzz]")
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	BRIDGE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) BRIDGE_FUZZ_REPORT=fuzz_report.json $(PY) -m pytest -q -s -p no:xdist tests/test_fuzz.py
	@cat fuzz_report.json
	@if $(PY) -c "import atheris" 2>/dev/null; then mkdir -p runs/fuzz && cd runs/fuzz && \
	  ../../$(PY) ../../tests/atheris_fuzz.py all $(FUZZ_EXAMPLES); \
	else echo "atheris not installed: coverage-guided fuzzing skipped (pip install -e '.[fuzz]')"; fi

# every benchmark writes runs/bench/NAME.json; one table at the end (docs/performance.md).
# `make bench BENCH_RUNS=3`: the whole set three times (runs/bench/run1..3), then each ratio's spread
BENCH_RUNS ?= 1
bench: $(STAMP)
	@rm -rf runs/bench
	@if [ "$(BENCH_RUNS)" = 1 ]; then \
	  for b in $(filter-out benchmarks/bench_common.py,$(wildcard benchmarks/bench_*.py)); do \
	    echo "== $$b"; $(PY) $$b || exit 1; done; \
	  $(PY) benchmarks/bench_common.py; \
	else \
	  for k in $$(seq 1 $(BENCH_RUNS)); do \
	    for b in $(filter-out benchmarks/bench_common.py,$(wildcard benchmarks/bench_*.py)); do \
	      echo "== run $$k: $$b"; BRIDGE_BENCH_DIR=runs/bench/run$$k $(PY) $$b || exit 1; done; \
	    $(PY) benchmarks/bench_common.py runs/bench/run$$k; done; \
	  $(PY) benchmarks/bench_common.py --spread runs/bench/run*; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
