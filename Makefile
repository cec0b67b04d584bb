# Two commands matter: `make run` (the whole system on embedded services) and `make test`.
# Both work on a fresh machine with only Python 3.11: they build .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check services services-down provision bench clean screenshots

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devrun

# Two pytest-xdist workers, each with its own embedded Postgres, NATS and S3
# (devstack/pytest_plugin.py); a test file stays on one worker.
test: $(STAMP) lint typecheck
	@command -v chromium >/dev/null 2>&1 || echo "Browser tests (backoffice/tests/browser) will be skipped: no chromium. Install it: sudo apt-get install -y chromium"
	$(BIN)/python -m pytest -n 2 --dist loadfile --cov --cov-report=term:skip-covered --cov-report=xml -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	HEALTH_ENV=test HEALTH_EMBEDDED_SERVICES=false DATABASE_URL=postgresql://typecheck@127.0.0.1:1/none \
		$(BIN)/mypy .

# The backoffice screenshots of docs/phase-3/backoffice.md, taken by the browser tests
# (headless chromium, as in make test) on throw-away services.
screenshots: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "make screenshots needs chromium: sudo apt-get install -y chromium"; exit 1; }
	BACKOFFICE_SCREENSHOTS=docs/phase-3/backoffice $(BIN)/python -m pytest backoffice/tests/browser -q -p no:cacheprovider

services: $(STAMP)
	$(BIN)/python -m devstack up

services-down: $(STAMP)
	$(BIN)/python -m devstack down

provision: $(STAMP)
	$(BIN)/python manage.py provision

bench: $(STAMP)
	$(BIN)/python -m bench

clean: services-down
	rm -rf .devstack .devstack-test-* .pytest_cache .mypy_cache .ruff_cache .coverage coverage.xml
