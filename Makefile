# maildesk: `make demo` shows it working, `make test` runs the whole suite.
# Both set up what they need: a virtualenv in .venv with the package and its
# test dependencies, and Debian's dovecot-imapd when it is missing (as root).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all demo test test-fast lint bench bench-sla system-deps venv clean

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# the bytecode a wheel install would have; PYTHONDONTWRITEBYTECODE would
	@# otherwise make every maildesk process compile the package again
	$(PY) -m compileall -q maildesk
	touch $@

venv: $(VENV)/.installed

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
