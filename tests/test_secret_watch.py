"""The secret watch (tests/support/secret_watch.py) finds what it must, allows only what is by
design, and fails the test a leak happened in without printing the secret."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.secret_watch import WATCH, Leak, SecretKind, register_secret

REPO_ROOT = Path(__file__).resolve().parents[1]
LABEL = "API key (self-test)"
log = logging.getLogger("app.secret_watch_self_test")


@pytest.fixture
def secret() -> str:
    return register_secret(SecretKind.API_KEY, f"ib_{secrets.token_urlsafe(24)}", "self-test")


def labels(leaks: list[Leak]) -> list[str]:
    return [leak.label for leak in leaks]


def test_a_secret_in_a_message_an_extra_field_or_a_traceback_is_reported(secret: str) -> None:
    log.debug("key %s", secret)
    log.info("api.key_used", extra={"key": secret})
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        log.exception("api.failed")
    log.info("api.key_used", extra={"prefix": secret[:6]})

    leaks = WATCH.take_leaks()

    assert labels(leaks) == [LABEL] * 3
    assert [leak.where.split(" at ")[0] for leak in leaks] == [
        "log record DEBUG of app.secret_watch_self_test",
        "log record INFO of app.secret_watch_self_test",
        "log record ERROR of app.secret_watch_self_test",
    ]


def test_a_leaked_record_reaches_later_handlers_redacted(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=log.name):
        log.warning("key %s", secret, extra={"again": secret})

    assert labels(WATCH.take_leaks()) == [LABEL]
    assert secret not in caplog.text
    assert caplog.messages == [f"key <{LABEL}>"]


def test_a_logger_that_does_not_propagate_is_watched_too(secret: str) -> None:
    """uvicorn's own logging setup keeps `uvicorn.access` from reaching the root logger."""
    access = logging.getLogger("app.secret_watch_self_test.access")
    own_handler = logging.NullHandler()
    access.addHandler(own_handler)
    access.propagate = False
    try:
        access.warning('127.0.0.1 - "GET /callback?key=%s HTTP/1.1" 200', secret)
    finally:
        access.propagate = True
        access.removeHandler(own_handler)

    assert labels(WATCH.take_leaks()) == [LABEL]


def test_a_secret_inside_base64_or_url_quoting_is_found(secret: str) -> None:
    for offset in range(3):  # an XOAUTH2 string puts the token at any byte alignment
        sasl = f"user={'u' * offset}\x01auth=Bearer {secret}\x01\x01".encode()
        log.debug("> %s", base64.b64encode(sasl).decode())
    password = f"p@ss/{secrets.token_urlsafe(12)}"
    register_secret(SecretKind.IMAP_PASSWORD, password, "self-test")
    log.debug("GET /callback?password=%s", quote(password, safe=""))

    assert labels(WATCH.take_leaks()) == [LABEL] * 3 + ["IMAP password (self-test)"]


def answering(body: bytes | Iterator[bytes], headers: dict[str, str] | None = None) -> httpx.Client:
    """A client whose every request is answered with `body` (a transport we do not own)."""

    def answer(request: httpx.Request) -> httpx.Response:
        status = 201 if request.url.path == "/v1/webhooks" else 200
        return httpx.Response(status, content=body, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(answer), base_url="http://bridge.test")


def test_an_http_answer_holding_a_secret_is_reported(secret: str) -> None:
    with answering(f'{{"key": "{secret}"}}'.encode()) as client:
        client.get("/v1/mailboxes")
    with answering(b"{}", {"X-Debug": secret}) as client:
        client.get("/v1/mailboxes")
    halves = iter([f"data: {secret[:10]}".encode(), f"{secret[10:]}\n\n".encode()])
    with answering(halves) as client, client.stream("GET", "/v1/events") as stream:
        stream.read()

    leaks = WATCH.take_leaks()

    assert labels(leaks) == [LABEL] * 3
    assert leaks[0].where == "answer 200 to GET bridge.test/v1/mailboxes"
    assert leaks[2].where.endswith("(streamed)")


def test_only_the_routes_that_hand_out_a_secret_by_design_may_answer_with_it() -> None:
    token = register_secret(SecretKind.ACCESS_TOKEN, secrets.token_urlsafe(20), "self-test")
    webhook_secret = f"whsec_{secrets.token_urlsafe(24)}"
    with answering(f'{{"access_token": "{token}"}}'.encode()) as client:
        client.post("/v1/oauth/gmail/token", json={})  # get-token: by design
        client.post("/v1/oauth/gmail/check-connection", json={})
    with answering(f'{{"id": 7, "secret": "{webhook_secret}"}}'.encode()) as client:
        client.post("/v1/webhooks", json={})  # shown once, and learned
        client.get("/v1/webhooks/7")
    rotated = f"whsec_{secrets.token_urlsafe(24)}"
    with answering(f'{{"id": 8, "secret": "{rotated}"}}'.encode()) as client:
        client.post("/v1/webhooks/8/rotate-secret")  # shown once, and learned
        client.get("/v1/webhooks/8")
    code = register_secret(SecretKind.OAUTH_CODE, secrets.token_urlsafe(20), "self-test")
    with answering(f"<script>{code}</script>".encode()) as client:
        client.get("/oauth/gmail/callback")  # the page hands the code to its opener
        client.get("/v1/mailboxes")

    assert labels(WATCH.take_leaks()) == [
        "OAuth access token (self-test)",
        "webhook signing secret (endpoint 7)",
        "webhook signing secret (endpoint 8)",
        "OAuth authorization code or state (self-test)",
    ]


def test_what_a_python_child_prints_is_checked(secret: str) -> None:
    printing = [sys.executable, "-c", f"print({secret!r})"]

    subprocess.run(printing, capture_output=True, text=True, check=True)
    subprocess.run([*printing, "apikey", "create"], capture_output=True, check=True)

    assert [(leak.label, leak.where.split(" of ")[0]) for leak in WATCH.take_leaks()] == [
        (LABEL, "stdout")
    ]


LEAKY_TESTS = """
import logging

from tests.support.secret_watch import SecretKind, register_secret


def test_leaks():
    register_secret(SecretKind.IMAP_PASSWORD, "{secret}", "inner")
    logging.getLogger("app.inner").warning("password is %s", "{secret}")


def test_keeps_quiet():
    register_secret(SecretKind.IMAP_PASSWORD, "{secret}", "inner")
    logging.getLogger("app.inner").debug("logged in")
"""


def test_a_leak_fails_its_test_and_the_secret_is_never_printed(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(18)
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS.format(secret=secret))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.secret_watch",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "2 passed, 1 error" in output
    assert "ERROR at teardown of test_leaks" in output
    assert "IMAP password (inner) in log record WARNING of app.inner" in output
    assert "password is <IMAP password (inner)>" in output  # pytest's captured log, redacted
    assert "secret watch: 2 log records, 0 HTTP answers, 0 streamed chunks" in output
    assert secret not in output
