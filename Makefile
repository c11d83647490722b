# Two commands on a fresh machine (only Python >= 3.10 and make needed):
#   make demo   - the tour: every task, on its own embedded Redis
#   make test   - lint, format and type checks, and the whole test suite (fault injection included) with coverage
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TASK   ?=

.PHONY: demo test quick lint format typecheck coverage redis dashboard clean

$(STAMP): requirements.txt
	@test -x $(PY) || { echo "Creating $(VENV) (the first time only)..."; \
		$(PYTHON) -m venv $(VENV) || { echo "Could not create a virtualenv: install Python's venv module (Debian/Ubuntu: apt install python3-venv)"; exit 1; }; }
	@echo "Installing requirements.txt into $(VENV) (about 30 s the first time)..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

demo: $(STAMP)
	@$(PY) tour.py $(TASK)

test: $(STAMP)  # lint, format, types, then the whole suite with branch coverage (fail_under: pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest --cov --cov-report=term:skip-covered

quick: $(STAMP)  # everything but the slow fault-injection tests
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)  # mypy: strict on queuing_system/, the lessons and tour.py checked (pyproject.toml)
	$(PY) -m mypy

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

coverage: $(STAMP)
	$(PY) -m pytest --cov --cov-report=term-missing

redis: $(STAMP)  # a Redis for running the lessons by hand (Ctrl+C stops it)
	@$(PY) -m queuing_system.redis_server

sentinel: $(STAMP)  # a Sentinel group (primary, 2 replicas, 3 sentinels) to try failovers (Ctrl+C stops it)
	@$(PY) -m queuing_system.redis_server --sentinel

dashboard: $(STAMP)  # the web dashboard, on http://127.0.0.1:9181
	@$(PY) -m queuing_system.dashboard

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .coverage htmlcov
