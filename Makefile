# `make run` starts the dashboard, `make test` runs every check. Both create .venv when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test lint typecheck pytest e2e screenshots bench clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py --browser.gatherUsageStats false

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy vecdash map_picture.py
	@command -v chromium >/dev/null || echo "NOTE: chromium is not installed: the browser tests (tests/e2e) are skipped"
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy vecdash map_picture.py

pytest: $(STAMP)
	$(PY) -m pytest

# The browser tests alone (real chromium driving `streamlit run app.py`).
e2e: $(STAMP)
	@command -v chromium >/dev/null || { echo "chromium is not installed: apt-get install chromium"; exit 1; }
	$(PY) -m pytest tests/e2e

# README's pictures: every page with the demo loaded, from the browser tests.
screenshots: $(STAMP)
	VECDASH_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest tests/e2e -k every_page

# Every benchmark, one after another (the search and index ones harvest and embed the 100k
# real-text corpus on their first run: about 40 minutes, cached afterwards).
BENCHES := ingest_bench embed_bench search_bench index_bench map_bench

bench: $(STAMP)
	set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py; done

clean-venv:
	rm -rf $(VENV)
