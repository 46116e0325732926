# Every target bootstraps what it needs, so a fresh clone only needs `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DOVECOT := /usr/sbin/dovecot
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint format openapi bench dovecot chromium node clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

# The test suite starts its own private Dovecot; only the binaries are needed.
dovecot:
	@test -x $(DOVECOT) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd; }

# The OAuth popup test drives Debian's headless Chromium (no browser is ever downloaded).
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The TypeScript client test installs its pinned npm tools itself (into .npm/, git ignores it).
node:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

run: $(INSTALLED)
	$(BIN)/imap-bridge run

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
test: $(INSTALLED) dovecot chromium node
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: $(INSTALLED)
	$(BIN)/imap-bridge openapi --output openapi/openapi.json

bench: $(INSTALLED) dovecot
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .npm .pytest_cache .mypy_cache .ruff_cache
