# `make run` starts the dashboard, `make test` runs every check. Both create .venv when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test lint typecheck pytest bench clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run app.py --browser.gatherUsageStats false

test: $(STAMP)
	$(PY) -m ruff check vecdash app_pages app.py ui.py tests bench
	$(PY) -m mypy vecdash
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check vecdash app_pages app.py ui.py tests bench

typecheck: $(STAMP)
	$(PY) -m mypy vecdash

pytest: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/ingest_bench.py

clean-venv:
	rm -rf $(VENV)
