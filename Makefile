# Two entry points for a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run build test lint bench browsers clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first: the CPU wheel on this machine's disk; a bare `torch` requirement would pull a CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,postgres]"
	touch $@

install: $(VENV)/.installed

build: install
	$(BIN)/kb check
	$(BIN)/kb build

run: build
	$(BIN)/kb serve --host 127.0.0.1 --port 8000

# Browser tests need Debian's chromium; installed here when missing and we are root.
browsers:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-core >/dev/null) || echo "chromium not installed: browser tests will skip"; }

test: install browsers
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python benchmarks/build.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/postgres.py

clean:
	rm -rf $(VENV) index/bundles index/CURRENT index/embcache.sqlite
