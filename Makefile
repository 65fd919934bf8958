# txlb: build, test and demo.  GNU make.
#
#   make test     system packages, venv, lint, typecheck, unit tests, the wheel, integration tests
#   make demo     three demo backends and txlb on http://127.0.0.1:8080/ (Ctrl-C stops all)
#   make venv     .venv with txlb installed (not editable) and the test tools
#   make wheel    sdist and wheel built as a new user would, the wheel in a fresh venv
#   make bench    txlb against nginx, HAProxy, Caddy, aiohttp, stock Twisted (< 10 min)
#   make soak     the chaos soak, SOAK_SECONDS long (default 600)
#   make clean

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip

# Playwright for Python drives Debian's /usr/bin/chromium: never fetch a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# What the installed copy of txlb is built from: a change to any of these
# reinstalls it.
SOURCES := $(shell find txlb backends web twisted/plugins \
	-path web/vendor -prune -o -type f \( -name '*.py' -o -path 'web/*' \) -print 2>/dev/null)

# make wheel's sdist, wheel and fresh venv (tests/integration/test_wheel.py).
WHEEL_DIR := test-output/wheel

DEPS_STAMP := $(VENV)/.deps-stamp
INSTALL_STAMP := $(VENV)/.txlb-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: all test venv system-deps web-vendor wheel lint typecheck unit pytest demo bench soak clean

all: test

# Fails fast: each step runs only if the ones before it passed.
test: system-deps venv lint typecheck unit wheel pytest
# Under make test the wheel tests fail, rather than skip, without a wheel.
test: export TXLB_WHEEL_DIR := $(CURDIR)/$(WHEEL_DIR)

system-deps:
	PY=$(PY) scripts/install-system-deps.sh

# The dashboard's Chart.js, pinned by package-lock.json, copied into
# web/vendor/.  A no-op until package.json and package-lock.json exist.
ifneq ($(wildcard package.json),)
ifneq ($(wildcard package-lock.json),)
WEB_VENDOR := web/vendor/chart.umd.js

# npm writes node_modules/.package-lock.json on every install.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The same copy step setup.py runs when a build finds web/vendor/ empty.
$(WEB_VENDOR): node_modules/.package-lock.json scripts/copy-vendor.js
	node scripts/copy-vendor.js
	touch $@
else
$(info make: package.json has no package-lock.json yet; web-vendor does nothing)
endif
endif

web-vendor: $(WEB_VENDOR)

venv: $(INSTALL_STAMP)

# The venv and the third-party packages: redone when the requirements change.
$(DEPS_STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	rm -rf build
	$(PIP) install -q ".[test]" playwright
	touch $@

# txlb itself, reinstalled (not editable) whenever its sources change, so the
# tests exercise what an installation has.  build/ is removed first so files
# deleted from the tree do not linger in the wheel.
$(INSTALL_STAMP): $(DEPS_STAMP) $(SOURCES) setup.cfg setup.py MANIFEST.in pyproject.toml $(WEB_VENDOR)
	rm -rf build
	$(PIP) install -q --no-deps --force-reinstall .
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy txlb backends

unit: venv
	$(BIN)/python -m twisted.trial tests

# Built from the files a clone has (so the build fetches Chart.js itself),
# every time: the sdist, the wheel from the sdist, a new venv with the wheel.
wheel: venv
	$(BIN)/python scripts/wheel.py $(WHEEL_DIR)

pytest: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# The benchmark's own packages (setup.cfg's bench extra: aiohttp, matplotlib),
# never part of the test extras.
$(BENCH_STAMP): $(DEPS_STAMP) setup.cfg
	$(PIP) install -q $$($(BIN)/python -c 'import configparser as c; p = c.ConfigParser(); p.read("setup.cfg"); print(" ".join(p["options.extras_require"]["bench"].split()))')
	touch $@

# All scenarios and peers; results in bench/results/latest.{json,md,png}.
# A subset: make bench BENCH_ARGS="--scenarios 1 --peers txlb,aiohttp,caddy"
bench: system-deps venv $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

demo: system-deps venv
	$(BIN)/python scripts/demo.py

# Chaos under load (scripts/soak.py): the report in test-output/soak/.  make
# test runs a 60-second one (tests/integration/test_soak.py).
SOAK_SECONDS ?= 600
soak: system-deps venv
	$(BIN)/python scripts/soak.py --seconds $(SOAK_SECONDS) --rss-bound 10 \
		--workdir test-output/soak --json test-output/soak/report.json

clean:
	rm -rf $(VENV) build dist *.egg-info node_modules web/vendor \
		_trial_temp* .pytest_cache .mypy_cache .ruff_cache .hypothesis test-output \
		twisted/plugins/dropin.cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
