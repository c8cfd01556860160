# groundqa: `make run` serves the seeds, `make test` runs the checks and the test suite.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run index test test-ray lint bench bench-verifier eval clean

# pip may be configured with optional local indexes; its "is ignored" notes about them are noise.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 \
	  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## build the index if missing or stale, then serve on http://127.0.0.1:8000
	$(BIN)/groundqa serve

index: $(STAMP)
	$(BIN)/groundqa index

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

test: $(STAMP) lint  ## install, lint, type-check and run the test suite
	$(BIN)/pytest -q

test-ray: $(STAMP)  ## the Ray engine tests (installs the optional extra)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,ray]' 2>&1 \
	  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	$(BIN)/pytest -q -m ray

bench: $(STAMP)
	$(BIN)/python -m bench

bench-verifier: $(STAMP)  ## the verifier's catch and false-rejection rates on SQuAD and on claims about the seed (no LLM)
	$(BIN)/python -m bench.verifier ../shared/eval/squad

eval: $(STAMP)  ## retrieval metrics, then follow-up conversations next to their standalone questions
	$(BIN)/groundqa eval ../shared/eval/scifact --split train
	$(BIN)/groundqa eval ../shared/eval/squad --split dev
	$(BIN)/groundqa eval seeds --conversations bench/conversations/seed.json
	$(BIN)/groundqa eval ../shared/eval/squad --split dev --conversations bench/conversations/squad.json

clean:
	rm -rf $(VENV) index/builds index/cache index/CURRENT
