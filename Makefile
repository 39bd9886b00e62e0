# Everything a fresh machine needs is set up by these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Extra requirements for the venv, e.g. EXTRA_PIP='Django>=6,<7'.
EXTRA_PIP ?=
EXTRAS ?= test,dev,demo
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# Debian's Chromium drives the browser tests (never a downloaded browser).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
PG_URL := $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/test)
# The MariaDB pass of `make test` (its test database: test_<name>).
MYSQL_URL ?= mysql://root@127.0.0.1:3306/test

.PHONY: venv mysql-client demo-venv docs browser prometheus node-client test test-sites lint typecheck run clean bench bench-backfill bench-flush soak dist wheel-test

$(VENV)/.installed: pyproject.toml | mysql-client
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install -q -e '.[$(EXTRAS)]' $(if $(EXTRA_PIP),'$(EXTRA_PIP)') 2>&1 | grep -v '^WARNING: Location'; test $${PIPESTATUS[0]} -eq 0
	touch $@

venv: $(VENV)/.installed

# mysqlclient (the test extra) builds against libmariadb: pkg-config and its
# headers come from apt where they are missing and we may (root with apt-get),
# before the venv's pip install needs them.
mysql-client:
	@if ! { command -v pkg-config >/dev/null && { pkg-config --exists libmariadb || pkg-config --exists mysqlclient; }; } && \
		[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "== installing pkg-config and libmariadb-dev for mysqlclient"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libmariadb-dev >/dev/null \
			|| echo "NOTE: could not install libmariadb-dev; mysqlclient may not build." >&2; \
	fi

# What the demo needs and nothing more (no test or lint tools): `make run`.
# With DATABASE_URL on PostgreSQL or MariaDB, its driver too.
comma := ,
DEMO_EXTRAS := demo$(if $(filter postgres://% postgresql://%,$(DATABASE_URL)),$(comma)postgres)$(if $(filter mysql://%,$(DATABASE_URL)),$(comma)mysql)
$(VENV)/.installed-demo: pyproject.toml | mysql-client
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install -q -e '.[$(DEMO_EXTRAS)]' 2>&1 | grep -v '^WARNING: Location'; test $${PIPESTATUS[0]} -eq 0
	touch $@

demo-venv: $(VENV)/.installed-demo

# The docs site (Sphinx, furo, MyST) in docs/_build/html; warnings are errors,
# every internal link and anchor is checked, and no page may load anything
# from the network (furo ships its own assets).
$(VENV)/.installed-docs: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[docs]' 2>&1 | grep -v '^WARNING: Location'; test $${PIPESTATUS[0]} -eq 0
	touch $@

docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -W --keep-going -n -q -b html docs docs/_build/html
	@if grep -rEo '<(script|link)[^>]*https?://[^>]*>' docs/_build/html --include='*.html'; then \
		echo "the built pages load the above from the network" >&2; exit 1; \
	fi
	@echo "== docs: file://$(CURDIR)/docs/_build/html/index.html"

# Installs Chromium where it is missing and we may (root with apt-get); elsewhere
# the browser tests skip, saying why, unless REQUIRE_BROWSER=1 makes that a failure.
browser:
	@if [ ! -x "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "== installing Chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
			|| echo "NOTE: could not install Chromium; the browser tests will not run." >&2; \
	fi

# Debian's Prometheus scrapes a real flusher in tests/test_metrics.py, installed
# where it is missing and we may (root with apt-get); elsewhere that test skips,
# saying why, unless REQUIRE_PROMETHEUS=1 makes it a failure.
PROMETHEUS ?= /usr/bin/prometheus
export PROMETHEUS
prometheus:
	@if [ ! -x "$(PROMETHEUS)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "== installing Prometheus for the metrics test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
			|| echo "NOTE: could not install Prometheus; the metrics test will not run." >&2; \
	fi

# Sentry's generated TypeScript client (@sentry/api) for tests/test_usage_client.py,
# installed from the committed lock file. Node.js and npm come from apt where
# they are missing and we may (root); elsewhere that test skips, saying why,
# unless REQUIRE_NODE=1 makes it a failure.
CLIENT_DIR := tests/sentry_api_client
node-client: $(CLIENT_DIR)/node_modules/.installed

$(CLIENT_DIR)/node_modules/.installed: $(CLIENT_DIR)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "== installing Node.js and npm for the @sentry/api client test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
			|| echo "NOTE: could not install Node.js and npm." >&2; \
	fi
	@if command -v npm >/dev/null 2>&1; then \
		echo "== npm ci in $(CLIENT_DIR)"; \
		cd $(CLIENT_DIR) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	elif [ "$(REQUIRE_NODE)" = "1" ]; then \
		echo "npm is required (REQUIRE_NODE=1) but not found" >&2; exit 1; \
	else \
		echo "NOTE: npm not found; the @sentry/api client test will not run."; \
	fi

# The SQLite suite, then PostgreSQL and MariaDB side by side (separate
# processes and test databases; MariaDB's output follows PostgreSQL's); fails
# if either fails.
MYSQL_UP := $(PY) -c "import sys, dj_database_url, MySQLdb; s = dj_database_url.parse(sys.argv[1]); MySQLdb.connect(host=s['HOST'], port=int(s['PORT'] or 3306), user=s['USER'], password=s['PASSWORD'], connect_timeout=3).close()"
MYSQL_LOG := $(VENV)/mariadb-test.log

test: venv browser prometheus node-client
	@mysql_pid=""; \
	if $(MYSQL_UP) "$(MYSQL_URL)" 2>/dev/null; then \
		echo "== MariaDB: $(MYSQL_URL) (in the background, output below)"; \
		TEST_DATABASE_URL="$(MYSQL_URL)" $(PY) -m pytest -q -p no:cacheprovider >"$(MYSQL_LOG)" 2>&1 & mysql_pid=$$!; \
	elif [ "$(REQUIRE_MYSQL)" = "1" ]; then \
		echo "MariaDB is required (REQUIRE_MYSQL=1) but no server answers at $(MYSQL_URL)" >&2; exit 1; \
	else \
		echo "NOTE: no MariaDB server answers at $(MYSQL_URL); skipped the MariaDB suite."; \
	fi; \
	echo "== SQLite"; \
	lite=0; $(PY) -m pytest -q -p no:cacheprovider || lite=$$?; \
	pg=0; \
	if $(PY) -c "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$(PG_URL)" 2>/dev/null; then \
		echo "== PostgreSQL: $(PG_URL)"; \
		TEST_DATABASE_URL="$(PG_URL)" $(PY) -m pytest -q -p no:cacheprovider || pg=$$?; \
	elif [ "$(REQUIRE_POSTGRES)" = "1" ]; then \
		echo "PostgreSQL is required (REQUIRE_POSTGRES=1) but no server answers at $(PG_URL)" >&2; pg=1; \
	else \
		echo "NOTE: no PostgreSQL server answers at $(PG_URL); ran the SQLite suite only."; \
	fi; \
	my=0; \
	if [ -n "$$mysql_pid" ]; then \
		wait $$mysql_pid || my=$$?; \
		echo "== MariaDB: $(MYSQL_URL)"; cat "$(MYSQL_LOG)"; \
	fi; \
	[ $$lite -eq 0 ] && [ $$pg -eq 0 ] && [ $$my -eq 0 ]

# Host-site configurations: tests/sites/test_<name>.py under the settings module
# tests.sites.settings_<name>, on SQLite and (when it answers) PostgreSQL.
test-sites: venv
	@for file in tests/sites/test_*.py; do \
		name=$$(basename "$$file" .py); name=$${name#test_}; \
		echo "== site configuration $$name: SQLite"; \
		$(PY) -m pytest -q -p no:cacheprovider --ds=tests.sites.settings_$$name "$$file" || exit 1; \
		if $(PY) -c "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()" "$(PG_URL)" 2>/dev/null; then \
			echo "== site configuration $$name: PostgreSQL $(PG_URL)"; \
			TEST_DATABASE_URL="$(PG_URL)" $(PY) -m pytest -q -p no:cacheprovider \
				--ds=tests.sites.settings_$$name "$$file" || exit 1; \
		elif [ "$(REQUIRE_POSTGRES)" = "1" ]; then \
			echo "PostgreSQL is required (REQUIRE_POSTGRES=1) but no server answers at $(PG_URL)" >&2; exit 1; \
		else \
			echo "NOTE: no PostgreSQL server answers at $(PG_URL); SQLite only."; \
		fi; \
	done

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

# The sdist and the wheel, in dist/.
dist: venv
	$(PY) -m build

# The wheel installed into a fresh venv and serving a site made by following the
# tutorial (docs/tutorial/), on SQLite and, when it answers, PostgreSQL.
wheel-test: venv
	$(PY) .ci/wheel_test.py

DEMO_URL := http://127.0.0.1:$(PORT)
EXAMPLE_PATH := /api/0/projects/the-interstellar-jurisdiction/pump-station/stats/
V2_EXAMPLE := /api/0/organizations/the-interstellar-jurisdiction/stats_v2/?statsPeriod=1d&interval=1h&category=error&field=sum(quantity)&groupBy=outcome&groupBy=reason

run: demo-venv
	$(PY) manage.py migrate --noinput
	@echo "== Demo data"
	$(PY) manage.py project_stats_demo
	@echo
	@echo "== Try it"
	@echo "  site:  $(DEMO_URL)/"
	@echo "  admin: $(DEMO_URL)/admin/  (user demo, the password above)"
	@out=$$($(PY) manage.py project_stats_token demo --name "make run") || exit 1; \
	token=$$(printf '%s\n' "$$out" | tail -n 1); \
	echo "  API:   the last 24 hours of received events, hourly, with a fresh token for demo:"; \
	echo "    curl -H \"Authorization: Bearer $$token\" $(DEMO_URL)$(EXAMPLE_PATH)"; \
	echo "  stats_v2: the last day's events by outcome and reason, hourly (as Grafana asks):"; \
	echo "    curl -H \"Authorization: Bearer $$token\" '$(DEMO_URL)$(V2_EXAMPLE)'"; \
	echo "  schema: $(DEMO_URL)/api/0/schema/swagger/"
	@if [ -f docs/_build/html/index.html ]; then \
		echo "  docs:  file://$(CURDIR)/docs/_build/html/index.html"; \
	else \
		echo "  docs:  make docs builds them into docs/_build/html (sources: docs/*.md)"; \
	fi
	@echo
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

clean:
	rm -rf $(VENV) build dist *.egg-info db.sqlite3

# Fills PostgreSQL at DATABASE_URL (default .../project_stats_bench) with 5M rows.
# Every benchmark, one Markdown report on stdout (PostgreSQL and wrk needed).
bench: venv
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
	$(PY) bench/run.py

bench-backfill: venv
	$(PY) bench/backfill.py

# The scale of the write buffer's flushes (about 20 minutes): single flushes of
# 1,000 to 50,000 active projects (FLUSH_PROJECTS to choose), then 5 minutes of
# steady load each at 250,000 active series flushed every 5 s and 1,000,000
# every 60 s, with two flushers (STEADY_SECONDS to shorten them).
bench-flush: venv
	$(PY) bench/flush_scale.py --projects $(or $(FLUSH_PROJECTS),1000 10000 50000)
	$(PY) bench/flush_steady.py --series 250000 --interval 5 --flushers 2 \
		$(if $(STEADY_SECONDS),--seconds $(STEADY_SECONDS))
	$(PY) bench/flush_steady.py --series 1000000 --interval 60 --flushers 2 --memory-series \
		$(if $(STEADY_SECONDS),--seconds $(STEADY_SECONDS))

# 60 s of wrk (32 connections) against gunicorn on PostgreSQL while events are
# ingested; fails on any non-2xx answer or worker memory growth past 10 %.
# SOAK_SECONDS=20 for a shorter run. Needs wrk (apt-get install wrk).
soak: venv
	$(PY) bench/soak.py $(if $(SOAK_SECONDS),--seconds $(SOAK_SECONDS))
