# Two commands on a fresh machine (only Python >= 3.10 and make needed):
#   make demo   - the tour: every task, on its own embedded Redis
#   make test   - lint and the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TASK   ?=

.PHONY: demo test lint format coverage clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "Could not create a virtualenv: install Python's venv module (Debian/Ubuntu: apt install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

demo: $(STAMP)
	@$(PY) tour.py $(TASK)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

coverage: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term-missing

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov
