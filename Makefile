# One task runner: CI calls these same targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUNDLE ?= models/default

.PHONY: run test lint bench bundle install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: anything unpinned pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[quantize,dev]'
	touch $(STAMP)

install: $(STAMP)

bundle: $(STAMP)
	$(BIN)/quantize build-default --out $(BUNDLE) --if-missing

run: bundle

test: $(STAMP)
	$(BIN)/ruff check edge quantize tests bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check edge quantize tests bench
	$(BIN)/ruff format --check edge quantize tests bench

bench: bundle
	$(BIN)/python bench/intent.py --bundle $(BUNDLE)
	$(BIN)/python bench/llm_quant.py

clean:
	rm -rf $(VENV) build .pytest_cache
