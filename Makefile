# The newcomer's whole set-up: `make demo` and `make test`. Everything is built from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all test lint demo deps mosquitto js-deps node-present clean bench

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

deps: $(STAMP) mosquitto js-deps

# Tests start their own private Mosquitto and drive Debian's chromium (the technician's page);
# install them from Debian's packages when they are missing.
mosquitto:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if ! command -v mosquitto >/dev/null 2>&1 && ! test -x /usr/sbin/mosquitto; then \
		echo "mosquitto not found: installing it from Debian's packages"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto mosquitto-clients; \
	fi; \
	if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
		echo "chromium not found: installing it for the web page's browser tests"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi; \
	if ! command -v shellcheck >/dev/null 2>&1; then \
		echo "shellcheck not found: installing it (optional: its test skips without it)"; \
		( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq shellcheck ) \
			|| echo "shellcheck could not be installed; the deploy script lint test will skip"; \
	fi

# The JavaScript decoder (clients/js) is tested against the Python codec, and Eclipse Tahu's
# Sparkplug decoder (tests/sparkplug_js) reads what the Sparkplug format sends: node and their
# npm packages (pinned by package-lock.json), Node from Debian's packages when it is missing.
JS_STAMP := clients/js/node_modules/.installed
SPB_STAMP := tests/sparkplug_js/node_modules/.installed
js-deps: $(JS_STAMP) $(SPB_STAMP)

node-present:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
		echo "node/npm not found: installing them from Debian's packages"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; \
	fi

$(JS_STAMP): clients/js/package.json clients/js/package-lock.json | node-present
	npm ci --prefix clients/js --no-audit --no-fund
	touch $@

$(SPB_STAMP): tests/sparkplug_js/package.json tests/sparkplug_js/package-lock.json | node-present
	npm ci --prefix tests/sparkplug_js --no-audit --no-fund
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check gateway drivers policies provisioning simulators tests $(wildcard bench)
	$(BIN)/mypy

test: deps lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the demo's extra: its embedded broker, for machines without Mosquitto
$(VENV)/.demo: $(STAMP)
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

demo: deps $(VENV)/.demo
	$(BIN)/edgegw demo $(DEMO_ARGS)

# by hand, on a quiet machine: each prints its figures against DESIGN.md section 6
bench: deps
	$(BIN)/python bench/modbus_bench.py
	$(BIN)/python bench/uplink_bench.py
	$(BIN)/python bench/command_bench.py
	$(BIN)/python bench/store_wear_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis clients/js/node_modules \
		tests/sparkplug_js/node_modules
