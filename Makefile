# maildesk: `make demo` shows it working, `make test` runs the whole suite.
# Both set up what they need: a virtualenv in .venv with the package and its
# test dependencies, and Debian's dovecot-imapd when it is missing (as root).

# The virtualenv's interpreter: the system's own /usr/bin/python3 when it is 3.11 or
# newer and can make a virtualenv, else the python3 on PATH; PYTHON=... picks another.
# Distributions build their python3 with profile-guided and link-time optimization;
# Debian's runs maildesk's ingest about 20% faster on SQLite and 8% on PostgreSQL, and
# starts every command about 15 ms sooner, than a python3 built without them (pyenv's
# default build; docs/operations.md, Install).
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo /usr/bin/python3)
PYTHON ?= $(or $(SYSTEM_PYTHON),python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all demo test test-fast test-postgresql test-future lint bench bench-sla system-deps faketime-deps venv clean

all: test

$(VENV)/.installed: pyproject.toml $(VENV)/.interpreter
	$(PYTHON) -m venv --clear $(VENV)
	command -v $(PYTHON) > $(VENV)/.interpreter
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# the bytecode a wheel install would have; PYTHONDONTWRITEBYTECODE would
	@# otherwise make every maildesk process compile the package again
	$(PY) -m compileall -q maildesk
	touch $@

venv: $(VENV)/.installed

# Which interpreter the virtualenv was made with: rewritten only when that changes, so
# that a different PYTHON makes the virtualenv again.
$(VENV)/.interpreter: FORCE
	@mkdir -p $(VENV); p="$$(command -v $(PYTHON))"; [ "$$(cat $@ 2>/dev/null)" = "$$p" ] || echo "$$p" > $@

FORCE:

# Dovecot is the real IMAP server of the tests and the demo.
system-deps:
	@if [ ! -x /usr/sbin/dovecot ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing dovecot-imapd (the tests' and the demo's IMAP server)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null; \
	    systemctl disable --now dovecot >/dev/null 2>&1 || true; \
	  else \
	    echo "maildesk's tests need Dovecot: sudo apt-get install dovecot-imapd"; exit 1; \
	  fi; \
	fi

test: venv system-deps
	@$(PY) -m compileall -q maildesk
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

# The suite again with every desk on PostgreSQL (the server of MAILDESK_TEST_POSTGRES,
# by default the local one), not only the tests that ask for both databases; the tests
# about SQLite itself stay on it. Not part of `make test`: it runs everything a second time.
test-postgresql: venv system-deps
	@$(PY) -m compileall -q maildesk
	MAILDESK_TEST_DATABASE=postgresql $(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

# The suite, then the demo, with the machine's clock moved (a year ahead unless FUTURE says
# otherwise, e.g. FUTURE=+180d for summer time): no test and no demo output may depend on
# today's date. Not part of `make test`: it runs everything a second time.
# Everything runs under Debian's libfaketime 0.9.10, with the monotonic clock left real
# (timed waits would hang otherwise); tests/future/sitecustomize.py mends the time.sleep
# that this combination breaks, in pytest and in every Python process it starts.
FUTURE ?= +365d
FAKETIME_RUN := PYTHONPATH=$(CURDIR)/tests/future FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f

test-future: venv system-deps faketime-deps
	@$(PY) -m compileall -q maildesk
	$(FAKETIME_RUN) '$(FUTURE)' $(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)
	@log=$$(mktemp) && echo "demo/demo.py at $(FUTURE)" && \
	  if $(FAKETIME_RUN) '$(FUTURE)' $(PY) demo/demo.py >$$log 2>&1; then rm -f $$log; echo "demo: ok"; \
	  else cat $$log; rm -f $$log; exit 1; fi

# faketime moves the clock for test-future.
faketime-deps:
	@if ! command -v faketime >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing faketime (make test-future moves the clock with it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; \
	  else \
	    echo "make test-future needs faketime: sudo apt-get install faketime"; exit 1; \
	  fi; \
	fi

test-fast: venv system-deps
	$(PY) -m pytest -q -x -m 'not slow' $(PYTEST_ARGS)

# what tests/test_lint.py checks, on its own (pyproject.toml holds both configurations)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: venv system-deps
	$(PY) demo/demo.py

bench: venv system-deps
	$(PY) bench/ingest.py --messages 2000

bench-sla: venv
	$(PY) bench/sla.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-run
