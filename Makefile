# Every target bootstraps what it needs, so a fresh clone only needs `make run`, `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DOVECOT := /usr/sbin/dovecot
CHROMIUM := /usr/bin/chromium

.PHONY: run demo test lint format openapi bench dovecot chromium servers node clean

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

# Cyrus and Courier for the server matrix. Both conflict with dovecot-imapd, so they are
# never installed: their .debs are unpacked into .servers/root, which the tests lay over
# /usr and /etc in a private mount namespace (tests/support/debian_servers.py).
SERVERS := .servers
SERVER_DEBS := courier-imap courier-base courier-authlib courier-authlib-userdb \
	courier-authdaemon libcourier-unicode4 libgamin0 gamin libidn12 libltdl7 \
	cyrus-imapd cyrus-common cyrus-admin sasl2-bin libzephyr4 libical3 libpcre3 \
	libxapian30 libsasl2-modules libsasl2-modules-db
SERVERS_UNPACKED := $(SERVERS)/root/.unpacked

servers: $(SERVERS_UNPACKED)

$(SERVERS_UNPACKED): Makefile
	rm -rf $(SERVERS)/debs $(SERVERS)/root
	mkdir -p $(SERVERS)/debs $(SERVERS)/root
	cd $(SERVERS)/debs && { apt-get download $(SERVER_DEBS) 2>/dev/null || \
		{ apt-get update -qq && apt-get download $(SERVER_DEBS); }; }
	for deb in $(SERVERS)/debs/*.deb; do dpkg-deb -x "$$deb" $(SERVERS)/root || exit 1; done
	# /lib is /usr/lib on a merged-/usr system: only the /usr layer is laid over.
	if [ -d $(SERVERS)/root/lib ]; then cp -a $(SERVERS)/root/lib/. $(SERVERS)/root/usr/lib/; fi
	touch $@

# The TypeScript client test installs its pinned npm tools itself (into .npm/, git ignores it).
node:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }

run: $(INSTALLED)
	$(BIN)/imap-bridge run

# A private Dovecot with a made-up mailbox and `imap-bridge run` syncing it (app/demo/), in a
# directory of its own, removed at Ctrl-C. DEMO_ARGS: --port P (0: any), --arrival-seconds S.
demo: $(INSTALLED) dovecot
	$(BIN)/python -m app.demo $(DEMO_ARGS)

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
test: $(INSTALLED) dovecot chromium servers node
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: $(INSTALLED)
	$(BIN)/imap-bridge openapi --output openapi/openapi.json

bench: $(INSTALLED) dovecot servers
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var $(SERVERS) .npm .pytest_cache .mypy_cache .ruff_cache
