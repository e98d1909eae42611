# Set-up and everyday commands. Each target creates the virtual environment and
# installs what it needs, so `make run` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# `make run` is the single-process development server: SQLite and the in-memory
# channel layer need DJANGO_DEBUG=true (see the README's configuration table).
export DJANGO_DEBUG ?= true

.PHONY: install run serve test migrate browser clean

install: $(STAMP)

$(STAMP): pyproject.toml sdk/python/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./sdk/python -e '.[test]'
	touch $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	@echo "Serving on http://$(HOST):$(PORT)/"
	@echo "Create the first account at http://$(HOST):$(PORT)/accounts/signup/,"
	@echo "or an admin account with: $(BIN)/python manage.py createsuperuser"
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# Debian's Chromium for the browser tests; Playwright drives it, and never
# downloads a browser of its own.
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* test-db.sqlite3*

# Several server processes on one port, sharing PostgreSQL and Redis:
#   DATABASE_URL=postgres://... REDIS_URL=redis://... make serve PROCESSES=4
PROCESSES ?= 2
serve: migrate
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT) --processes $(PROCESSES)
