"""The secret watch: no secret a test uses may reach a log record, an HTTP answer or the
output of a command the tests run, anywhere in the test run.

    register_secret(kind, value) where a test or fixture makes a secret
        -> the registry: this test's secrets, plus those registered outside any test
           (module constants, session fixtures); a test's own are dropped when it ends
    every log record (as any logger hands it to its handlers, propagating or not;
        the root logger is put at DEBUG for the run:
        message, extra fields, exception and stack text) ----------\
    every answer an httpx client gets (Client/AsyncClient.send:     >--> checked against
        status line, headers, body, redirect hops, streamed bodies) /     the registry
    stdout/stderr of Python processes started with subprocess.run -/
        -> a leak is recorded for the test it happened in, and the autouse fixture
           `no_secret_leaks` fails that test at teardown naming the secret's label,
           never the secret; a leaked log record is redacted in place, so pytest's
           own report of the failure does not print the secret either. A leak outside
           any test fails the run. The terminal summary says how much was checked.

A secret is looked for as written, URL-quoted, JSON-escaped and base64-encoded
(at each byte alignment, so an XOAUTH2 or SMTP AUTH string holding it is
caught too). Values shorter than MIN_SECRET_LENGTH characters would match
ordinary text by chance: they are not watched, and the summary counts them.

Pytest's own log capture keeps the level it had (WARNING and up): only the
watch sees the DEBUG records, so failure reports and `caplog` are unchanged.

Where a secret appears by design (each allowance covers only the kinds named; no
log record needs one: even the test SMTP server, aiosmtpd, keeps AUTH lines out of
its DEBUG trace):
- the answers to `POST /v1/webhooks` (201) and `POST /v1/webhooks/{id}/rotate-secret`
  (200) show the endpoint's new signing secret once; the watch learns the secret
  there and watches it from then on;
- the answer to `POST /v1/oauth/{provider}/token` (get-token, 200) hands the
  access and refresh tokens to the CRM;
- the OAuth callback page (`GET /oauth/{provider}/callback`) hands the code and
  state it was called with to the opener;
- the webhook routes (`/v1/webhooks...`) show an endpoint's URL as registered,
  a token in its query string included;
- the OAuth providers' token endpoints answer the service with access,
  refresh and ID tokens (Google's and Microsoft's, faked with respx, and the
  local authorization server's `POST /token`);
- `imap-bridge apikey create` prints the new key once (so does the first
  `imap-bridge run`, whose output tests read through a pipe: not watched);
- requests the tests send carry secrets on purpose: only answers are checked.

uvicorn's loggers are watched like any other, even where uvicorn's own logging
setup keeps them from propagating; tests serve at INFO (tests/support/live_api.py), so
its access lines, with each request's query string, are made and checked.

Not watched: answers read with `requests` (schemathesis) or by the browser
(Playwright), pipes of long-running processes, the test process's own stdout
and stderr.

PYTEST_DONT_REWRITE: fixtures import this module before pytest loads it as a
plugin, too late for assertion rewriting; it asserts nothing about tests.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

MIN_SECRET_LENGTH = 8
_URLSAFE = bytes.maketrans(b"+/", b"-_")
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}


class SecretKind(StrEnum):
    IMAP_PASSWORD = "IMAP password"
    SMTP_PASSWORD = "SMTP password"
    OAUTH_CLIENT_SECRET = "OAuth client secret"
    ACCESS_TOKEN = "OAuth access token"
    REFRESH_TOKEN = "OAuth refresh token"
    ID_TOKEN = "OAuth ID token"
    JWT_SIGNING_KEY = "JWT signing key"
    WEBHOOK_SECRET = "webhook signing secret"
    API_KEY = "API key"
    FERNET_KEY = "Fernet key"
    OAUTH_CODE = "OAuth authorization code or state"
    URL_TOKEN = "token in a webhook URL"
    METRICS_TOKEN = "metrics token"


@dataclass(frozen=True)
class Secret:
    """A watched value: what to call it in a report, and every form it can leak in."""

    kind: SecretKind
    label: str
    forms: tuple[bytes, ...]


@dataclass(frozen=True)
class Leak:
    """A secret found where it must not be; `where` never contains a secret."""

    label: str
    where: str


def leak_forms(value: str) -> tuple[bytes, ...]:
    """Return the byte strings that reveal `value`: as is, quoted, escaped, base64'd."""
    raw = value.encode()
    forms = {
        raw,
        quote(value, safe="").encode(),
        quote_plus(value, safe="").encode(),
        json.dumps(value)[1:-1].encode(),
    }
    for offset in range(3):
        # Only the characters that encode the secret's bits alone, whatever comes around it.
        encoded = base64.b64encode(bytes(offset) + raw)
        core = encoded[-(-8 * offset // 6) : 8 * (offset + len(raw)) // 6]
        forms |= {core, core.translate(_URLSAFE)}
    return tuple(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


_GET_TOKEN = re.compile(r"/v1/oauth/[^/]+/token")
_CALLBACK_PAGE = re.compile(r"/oauth/[^/]+/callback")
_PROVIDER_TOKEN_ENDPOINTS = (
    ("oauth2.googleapis.com", re.compile(r"/token")),
    ("login.microsoftonline.com", re.compile(r"/[^/]+/oauth2/v2\.0/token")),
    ("127.0.0.1", re.compile(r"/token")),  # the browser test's authorization server
)
_TOKENS = frozenset({SecretKind.ACCESS_TOKEN, SecretKind.REFRESH_TOKEN})


_WEBHOOK_ROTATION = re.compile(r"/v1/webhooks/[0-9]+/rotate-secret")


def issues_webhook_secret(request: httpx.Request, status: int) -> bool:
    """Say whether the answer is the one place a new webhook signing secret is shown."""
    if request.method != "POST":
        return False
    path = request.url.path
    return (path == "/v1/webhooks" and status == 201) or (
        _WEBHOOK_ROTATION.fullmatch(path) is not None and status == 200
    )


def allowed_in_answer(request: httpx.Request, status: int) -> frozenset[SecretKind]:
    """The kinds an HTTP answer may hold by design (see the module docstring)."""
    path = request.url.path
    if _CALLBACK_PAGE.fullmatch(path) and request.method == "GET":
        return frozenset({SecretKind.OAUTH_CODE})
    if path.startswith("/v1/webhooks"):
        issued = {SecretKind.WEBHOOK_SECRET} if issues_webhook_secret(request, status) else set()
        return frozenset({SecretKind.URL_TOKEN, *issued})
    if request.method != "POST" or status != 200:
        return frozenset()
    if _GET_TOKEN.fullmatch(path):
        return _TOKENS
    if any(
        request.url.host == host and token_path.fullmatch(path)
        for host, token_path in _PROVIDER_TOKEN_ENDPOINTS
    ):
        return _TOKENS | {SecretKind.ID_TOKEN}
    return frozenset()


def allowed_in_output(argv: list[str]) -> frozenset[SecretKind]:
    """The kinds a command's output may hold by design (see the module docstring)."""
    if any(argv[i : i + 2] == ["apikey", "create"] for i in range(len(argv))):
        return frozenset({SecretKind.API_KEY})
    return frozenset()


class SecretWatch:
    """The registry of secrets, the checks on everything seen, and the leaks found.

    Safe to use from any thread: the app under test logs and answers from
    uvicorn's thread, worker threads and the event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lasting: dict[bytes, Secret] = {}
        self._this_test: dict[bytes, Secret] = {}
        self._active: tuple[Secret, ...] = ()
        self.longest_form = 0
        self._in_test = False
        self._leaks: list[Leak] = []
        self.stray_leaks: list[Leak] = []
        self.registered = 0
        self.too_short = 0
        self.checked: Counter[str] = Counter()
        self.seconds = 0.0

    # -- the registry ---------------------------------------------------------------------

    def register(self, kind: SecretKind, value: str, detail: str = "") -> None:
        if len(value) < MIN_SECRET_LENGTH:
            with self._lock:
                self.too_short += 1
            return
        label = f"{kind.value} ({detail})" if detail else kind.value
        if value in label:
            raise ValueError("a secret's label must not contain the secret")
        secret = Secret(kind, label, leak_forms(value))
        with self._lock:
            if value.encode() in self._lasting or value.encode() in self._this_test:
                return
            self.registered += 1
            (self._this_test if self._in_test else self._lasting)[value.encode()] = secret
            self._refresh()

    def _refresh(self) -> None:
        """Publish the watched secrets as one tuple, so checks read it without the lock."""
        self._active = (*self._lasting.values(), *self._this_test.values())
        self.longest_form = max((len(f) for s in self._active for f in s.forms), default=0)

    def begin_test(self) -> None:
        with self._lock:
            self._in_test = True
            self._leaks = []

    def end_test(self) -> list[Leak]:
        """Close the test's window: forget its secrets, hand back its leaks."""
        with self._lock:
            self._in_test = False
            self._this_test.clear()
            self._refresh()
            leaks, self._leaks = self._leaks, []
        return leaks

    def take_leaks(self) -> list[Leak]:
        """Hand back (and forget) the leaks found so far in this test."""
        with self._lock:
            leaks, self._leaks = self._leaks, []
        return leaks

    # -- checking -------------------------------------------------------------------------

    def secrets_in(self, data: bytes, allowed: frozenset[SecretKind]) -> list[Secret]:
        return [
            secret
            for secret in self._active
            if secret.kind not in allowed and any(form in data for form in secret.forms)
        ]

    def redact(self, text: str) -> str:
        """Replace every watched secret in `text` by its label."""
        for secret in self._active:
            for form in secret.forms:
                text = text.replace(form.decode(errors="replace"), f"<{secret.label}>")
        return text

    @contextmanager
    def checking(self, what: str) -> Iterator[None]:
        """Count one check of `what` and the time it took."""
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.checked[what] += 1
                self.seconds += time.perf_counter() - started

    def record_leaks(self, secrets: Iterable[Secret], where: str) -> None:
        leaks = [Leak(secret.label, self.redact(where)) for secret in secrets]
        with self._lock:
            (self._leaks if self._in_test else self.stray_leaks).extend(leaks)

    def check_record(self, record: logging.LogRecord) -> None:
        """Look for secrets in the record's message, extra fields, exception and stack."""
        with self.checking("log records"):
            self._check_record(record)

    def _check_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!r} % {record.args!r}"
        extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRIBUTES}
        exception = record.exc_text or ""
        if record.exc_info and not exception:
            exception = logging.Formatter().formatException(record.exc_info)
        parts = [message, *map(_as_text, extras.values()), exception, record.stack_info or ""]
        found = self.secrets_in("\n".join(parts).encode(errors="replace"), frozenset())
        if not found:
            return
        self.record_leaks(
            found, f"log record {record.levelname} of {record.name} at line {record.lineno}"
        )
        self._redact_record(record, message, extras, exception)

    def _redact_record(
        self, record: logging.LogRecord, message: str, extras: dict[str, Any], exception: str
    ) -> None:
        """Rewrite a leaking record, so the handlers after this one never print the secret."""
        record.msg, record.args = self.redact(message), None
        for key, value in extras.items():
            setattr(record, key, self.redact(_as_text(value)))
        record.exc_info, record.exc_text = None, self.redact(exception) or None
        record.stack_info = self.redact(record.stack_info) if record.stack_info else None

    def check_answer(self, response: httpx.Response, *, with_body: bool) -> None:
        """Look for secrets in an answer's status line and headers, and its body if read."""
        with self.checking("HTTP answers"):
            self._check_answer(response, with_body=with_body)

    def _check_answer(self, response: httpx.Response, *, with_body: bool) -> None:
        request = response.request
        allowed = allowed_in_answer(request, response.status_code)
        head = b"\r\n".join(
            [response.reason_phrase.encode(), *(k + b": " + v for k, v in response.headers.raw)]
        )
        data = head + b"\r\n\r\n" + (response.content if with_body else b"")
        if with_body and issues_webhook_secret(request, response.status_code):
            self._learn_webhook_secret(response)
        found = self.secrets_in(data, allowed)
        if found:
            self.record_leaks(found, _answer_place(response))

    def _learn_webhook_secret(self, response: httpx.Response) -> None:
        created = response.json()
        self.register(SecretKind.WEBHOOK_SECRET, created["secret"], f"endpoint {created['id']}")

    def body_scanner(self, response: httpx.Response) -> BodyScanner:
        return BodyScanner(
            self, allowed_in_answer(response.request, response.status_code), response
        )

    def check_output(self, completed: subprocess.CompletedProcess[Any]) -> None:
        """Look for secrets in what a Python child process printed, when it was captured."""
        argv = completed.args
        if not isinstance(argv, list | tuple) or not argv or str(argv[0]) != sys.executable:
            return
        argv = [str(arg) for arg in argv]
        for name, output in (("stdout", completed.stdout), ("stderr", completed.stderr)):
            if output is None:
                continue
            with self.checking("command outputs"):
                data = output if isinstance(output, bytes) else output.encode(errors="replace")
                found = self.secrets_in(data, allowed_in_output(argv))
                if found:
                    self.record_leaks(found, f"{name} of `python {' '.join(argv[1:4])} ...`")

    def summary(self) -> str:
        checked = ", ".join(
            f"{self.checked[what]:,} {what}"
            for what in ("log records", "HTTP answers", "streamed chunks", "command outputs")
        )
        return (
            f"secret watch: {checked} checked against {self.registered:,} secrets"
            f" ({self.too_short:,} values too short to watch) in {self.seconds:.1f} s;"
            f" {len(self.stray_leaks)} leaks outside tests"
        )


class BodyScanner:
    """Check a streamed body chunk by chunk, keeping enough of the last chunk to see a
    secret that straddles two chunks; each secret is reported once per answer."""

    def __init__(
        self, watch: SecretWatch, allowed: frozenset[SecretKind], response: httpx.Response
    ) -> None:
        self._watch = watch
        self._allowed = allowed
        self._response = response
        self._tail = b""
        self._reported: set[str] = set()

    def feed(self, chunk: bytes) -> None:
        with self._watch.checking("streamed chunks"):
            self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        found = [
            secret
            for secret in self._watch.secrets_in(data, self._allowed)
            if secret.label not in self._reported
        ]
        if found:
            self._reported |= {secret.label for secret in found}
            self._watch.record_leaks(found, _answer_place(self._response) + " (streamed)")
        keep = max(self._watch.longest_form - 1, 0)
        self._tail = data[-keep:] if keep else b""


class _WatchedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, scanner: BodyScanner) -> None:
        self._inner = inner
        self._scanner = scanner

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._scanner.feed(chunk)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class _WatchedAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, scanner: BodyScanner) -> None:
        self._inner = inner
        self._scanner = scanner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._scanner.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else repr(value)


def _answer_place(response: httpx.Response) -> str:
    url = response.request.url
    return f"answer {response.status_code} to {response.request.method} {url.host}{url.path}"


WATCH = SecretWatch()


def register_secret(kind: SecretKind, value: str, detail: str = "") -> str:
    """Watch `value` for the rest of this test (for the whole run outside a test); return it.

    `detail` tells secrets of one kind apart in a report; it must not hold the secret.
    """
    WATCH.register(kind, value, detail)
    return value


# -- the pytest plugin ----------------------------------------------------------------------


class _Installation:
    """What the watch changed for the run, so `pytest_unconfigure` can put it back."""

    def __init__(self) -> None:
        self.patches = pytest.MonkeyPatch()
        self.root_level = logging.getLogger().level
        self.handler_levels: list[tuple[logging.Handler, int]] = []

    def install(self, config: pytest.Config) -> None:
        root = logging.getLogger()
        seen_before = root.getEffectiveLevel()
        root.setLevel(logging.DEBUG)
        # pytest's captures keep seeing what they saw before, unless told a level.
        capture = config.pluginmanager.get_plugin("logging-plugin")
        if capture is not None:
            for handler, configured in (
                (capture.caplog_handler, capture.log_level),
                (capture.report_handler, capture.log_level),
                (capture.log_file_handler, capture.log_file_level),
            ):
                if configured is None and handler.level < seen_before:
                    self.handler_levels.append((handler, handler.level))
                    handler.setLevel(seen_before)
        self.patches.setattr(httpx.Client, "send", _watched_send(httpx.Client.send))
        self.patches.setattr(httpx.AsyncClient, "send", _watched_async_send(httpx.AsyncClient.send))
        self.patches.setattr(subprocess, "run", _watched_run(subprocess.run))
        self.patches.setattr(
            logging.Logger, "callHandlers", _watched_call_handlers(logging.Logger.callHandlers)
        )

    def uninstall(self) -> None:
        self.patches.undo()
        for handler, level in self.handler_levels:
            handler.setLevel(level)
        logging.getLogger().setLevel(self.root_level)


def _watched_call_handlers(
    call_handlers: Callable[[logging.Logger, logging.LogRecord], None],
) -> Callable[[logging.Logger, logging.LogRecord], None]:
    """Check each record once, where its logger passes it to the handlers (after the
    logger's own filters, before any handler, whether or not it reaches the root)."""

    def watched(self: logging.Logger, record: logging.LogRecord) -> None:
        WATCH.check_record(record)
        call_handlers(self, record)

    return watched


def _watched_send(send: Callable[..., httpx.Response]) -> Callable[..., httpx.Response]:
    def watched(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response = send(self, request, **kwargs)
        _inspect(response, streamed=bool(kwargs.get("stream")))
        if kwargs.get("stream"):
            assert isinstance(response.stream, httpx.SyncByteStream)
            response.stream = _WatchedStream(response.stream, WATCH.body_scanner(response))
        return response

    return watched


def _watched_async_send(
    send: Callable[..., Awaitable[httpx.Response]],
) -> Callable[..., Awaitable[httpx.Response]]:
    async def watched(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response = await send(self, request, **kwargs)
        _inspect(response, streamed=bool(kwargs.get("stream")))
        if kwargs.get("stream"):
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = _WatchedAsyncStream(response.stream, WATCH.body_scanner(response))
        return response

    return watched


def _inspect(response: httpx.Response, *, streamed: bool) -> None:
    for hop in response.history:  # redirects, read before they were followed
        WATCH.check_answer(hop, with_body=True)
    WATCH.check_answer(response, with_body=not streamed)


def _watched_run(
    run: Callable[..., subprocess.CompletedProcess[Any]],
) -> Callable[..., subprocess.CompletedProcess[Any]]:
    def watched(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        completed = run(*args, **kwargs)
        WATCH.check_output(completed)
        return completed

    return watched


_installed = pytest.StashKey[_Installation]()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    installation = _Installation()
    installation.install(session.config)
    session.config.stash[_installed] = installation


def pytest_unconfigure(config: pytest.Config) -> None:
    installation = config.stash.get(_installed, None)
    if installation is not None:
        installation.uninstall()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if WATCH.stray_leaks and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(WATCH.summary())
    for leak in WATCH.stray_leaks:
        terminalreporter.write_line(f"  leak outside a test: {leak.label} in {leak.where}")


def describe(leaks: list[Leak]) -> str:
    """The failure message: each leaked secret's label and where it showed, once."""
    lines = [f"  {leak.label} in {leak.where}" for leak in dict.fromkeys(leaks)]
    return "secrets leaked (the watch names them; it never prints them):\n" + "\n".join(lines)


@pytest.fixture(autouse=True)
def no_secret_leaks() -> Iterator[None]:
    """Fail the test if one of the secrets watched leaked while it ran (setup to teardown)."""
    WATCH.begin_test()
    yield
    leaks = WATCH.end_test()
    if leaks:
        pytest.fail(describe(leaks), pytrace=False)
