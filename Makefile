# Two commands on a fresh machine (see README):
#   make book [PROFILE=smoke|local|full]   set up, execute every notebook at PROFILE, build the HTML
#   make test                              set up and run the whole test suite
#   make pdf [PROFILE=...]                 the whole book as one PDF
PROFILE ?= local
JOBS ?= 2
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fmbook-installed

.PHONY: setup fetch sync notebooks book pdf test browser-deps clean

$(STAMP): requirements.txt pyproject.toml
	@echo "== setting up $(VENV) (exact pins from requirements.txt; CPU build of PyTorch)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==26.3"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

setup: $(STAMP)

fetch: setup
	$(PY) -m fmbook fetch

# The MyST text notebooks are the source; their .ipynb pairs are written from them.
sync: setup
	$(PY) -m fmbook sync

notebooks: fetch sync
	$(PY) -m fmbook run --profile $(PROFILE) -j $(JOBS)

book: notebooks
	$(PY) -m fmbook book --profile $(PROFILE)

# The whole book as one PDF (_build/book.pdf), printed by Debian's Chromium from a single-page build.
pdf: notebooks browser-deps
	$(PY) -m fmbook pdf --profile $(PROFILE)

# Debian's Chromium for the browser checks (Playwright drives it; it cannot download its own).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium (browser tests will be skipped)"; fi; }

test: fetch browser-deps
	$(PY) -m pytest -ra

# results/bench/local holds the committed LM benchmark, not a build product.
clean:
	rm -rf _build results/*/smoke
	find results -mindepth 2 -maxdepth 2 -type d -name local ! -path 'results/bench/*' -exec rm -rf {} +
