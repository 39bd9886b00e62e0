# Everything a fresh machine needs is set up by these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Extra requirements for the venv, e.g. EXTRA_PIP='Django>=6,<7'.
EXTRA_PIP ?=
EXTRAS ?= test,dev
PG_URL := $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/test)

.PHONY: venv test test-sqlite test-postgres lint typecheck run clean bench-backfill

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]' $(if $(EXTRA_PIP),'$(EXTRA_PIP)')
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -p no:cacheprovider
	@if $(PY) -c "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$(PG_URL)" 2>/dev/null; then \
		echo "== PostgreSQL: $(PG_URL)"; \
		TEST_DATABASE_URL="$(PG_URL)" $(PY) -m pytest -q -p no:cacheprovider; \
	elif [ "$(REQUIRE_POSTGRES)" = "1" ]; then \
		echo "PostgreSQL is required (REQUIRE_POSTGRES=1) but no server answers at $(PG_URL)" >&2; exit 1; \
	else \
		echo "NOTE: no PostgreSQL server answers at $(PG_URL); ran the SQLite suite only."; \
	fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

clean:
	rm -rf $(VENV) build dist *.egg-info db.sqlite3

# Fills PostgreSQL at DATABASE_URL (default .../project_stats_bench) with 5M rows.
bench-backfill: venv
	$(PY) bench/backfill.py
