"""Every regular expression that reads outside input answers a hostile input quickly.

A pattern with nested or overlapping quantifiers (`(a+)+`, `(\\w(\\w*)?\\.?)+`) lets
Python's backtracking `re` try exponentially many splits of a run that almost
matches before it fails, on the event loop or a worker thread. Each case feeds
one validator or parser such a run (up to 10 kB, or the field's length limit
where the limit is checked first), then a character that makes it fail.

Each case runs in its own process, forked from a fork server that has every
module imported: it is killed after 5 s (a failure, not a hung suite), and
the call must finish within a generous 0.5 s; linear code takes milliseconds.

pydantic's `pattern=` fields run on Rust's linear-time regex engine (this
pydantic-core refuses look-around rather than falling back to `re`); they are
checked through their models all the same, so a change of engine shows here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from datetime import date
from multiprocessing.connection import Connection
from typing import Any

import pytest
from pydantic import SecretStr

from app.api.connection.schemas import ConnectionCheck
from app.api.emails.router import _MIME_TYPE, content_disposition
from app.api.mailboxes.schemas import MailboxCreate, OwnerRef
from app.api.notifications.schemas import NotificationRecipientItem
from app.api.oauth.schemas import AuthorizeRequest, OAuthConnectionCheck
from app.api.search.schemas import RemoteSearchRequest
from app.imap import connection, fetch
from app.imap.config import ImapConfig
from app.imap.headers import decode_header_value, parse_addresses
from app.imap.message import parse_message
from app.imap.mime_scan import part_transfer_encoding
from app.imap.search import SearchQueryBuilder
from app.oauth.providers import MicrosoftProvider

KILL_AFTER_SECONDS = 5.0
ALLOWED_SECONDS = 0.5
TEN_KB = 10_000

ALMOST_A_HOST = "a" * 252 + "!"  # 253 is the field's limit, checked before the pattern


def imap_config(**fields: Any) -> ImapConfig:
    values: dict[str, Any] = {"host": "imap.example.com", "username": "u", "password": "p"}
    return ImapConfig(**(values | fields))


def connection_check(*, imap: dict[str, Any] | None = None, password: str = "p") -> Any:
    settings = {"host": "imap.example.com", "username": "u"} | (imap or {})
    body = {"imap": settings, "auth": {"type": "password", "password": password}}
    return ConnectionCheck.model_validate(body)


def fetch_response(line: bytes) -> Any:
    return fetch._parse_fetch([line], [])


def message(headers: str, body: str = "body\r\n") -> Any:
    return parse_message(f"{headers}\r\n\r\n{body}".encode(), uid=1)


def multipart(part: str) -> Any:
    headers = 'Content-Type: multipart/mixed; boundary="b"'
    return message(headers, f"--b\r\n{part}\r\n--b--\r\n")


# name -> the call under test; each name says the entry point, then the hostile input.
CASES: dict[str, Callable[[], object]] = {
    # app/imap/config.py: the host name, once one exponential pattern
    "ImapConfig.host/letters-then-bang": lambda: imap_config(host=ALMOST_A_HOST),
    "ImapConfig.host/25-letters-then-bang": lambda: imap_config(host="a" * 25 + "!"),
    "ImapConfig.host/hyphenated-then-bang": lambda: imap_config(host="a" + "-a" * 125 + "!"),
    "ImapConfig.host/labels-then-bang": lambda: imap_config(host="a." * 126 + "!"),
    "ImapConfig.host/hex-and-colons-then-bang": lambda: imap_config(host="0:" * 126 + "!"),
    "ImapConfig.host/10kB": lambda: imap_config(host="a" * TEN_KB + "!"),
    "ImapConfig.username/control-character-last": lambda: imap_config(username="a" * 319 + "\r"),
    "ImapConfig.password/10kB-then-LF": lambda: imap_config(password="a" * TEN_KB + "\n"),
    "ImapSettings.host/letters-then-bang": lambda: connection_check(imap={"host": ALMOST_A_HOST}),
    "PasswordAuth.password/then-LF": lambda: connection_check(password="a" * 1023 + "\n"),
    # pydantic `pattern=` fields (Rust regex): the shared e-mail address pattern and others
    "MailboxCreate.email_address/two-runs-then-space": lambda: MailboxCreate.model_validate(
        {"email_address": "a" * 160 + "@" + "a" * 158 + " "}
    ),
    "OwnerRef.email/10kB": lambda: OwnerRef(user_id="u", email="a@" * (TEN_KB // 2) + " "),
    "AuthorizeRequest.login_hint/at-signs": lambda: AuthorizeRequest(
        origin="https://crm.example.com", login_hint="a@" * 160
    ),
    "OAuthConnectionCheck.email_address/then-NUL": lambda: OAuthConnectionCheck(
        access_token=SecretStr("t"), email_address="a" * 160 + "@" + "a" * 158 + "\x00"
    ),
    "NotificationRecipientItem.email/at-signs": lambda: NotificationRecipientItem.model_validate(
        {"user_id": "u", "email": "a@" * 160}
    ),
    "RemoteSearchRequest.folder/then-LF": lambda: RemoteSearchRequest.model_validate(
        {"folder": "a" * 999 + "\n"}
    ),
    # app/oauth/providers.py: Microsoft client id (GUID) and tenant (GUID or domain)
    "MicrosoftProvider.tenant/labels-then-bang": lambda: MicrosoftProvider().validate_settings(
        "00000000-0000-0000-0000-000000000000", "a." * 126 + "!"
    ),
    "MicrosoftProvider.tenant/10kB": lambda: MicrosoftProvider().validate_settings(
        "00000000-0000-0000-0000-000000000000", "a-" * (TEN_KB // 2) + "."
    ),
    "MicrosoftProvider.client_id/10kB": lambda: MicrosoftProvider().validate_settings(
        "0000-" * (TEN_KB // 5), None
    ),
    # app/imap/search.py: search criteria and header names
    "SearchQueryBuilder.header/name-then-colon": lambda: (
        SearchQueryBuilder().header("a" * TEN_KB + ":", "v").build()
    ),
    "SearchQueryBuilder.subject/specials-then-LF": lambda: (
        SearchQueryBuilder().subject("(){%*]" * (TEN_KB // 6) + "\n").build()
    ),
    "SearchQueryBuilder.since/with-long-text": lambda: (
        SearchQueryBuilder().since(date(2026, 1, 1)).text("é" * TEN_KB).build()
    ),
    # app/imap/fetch.py: FETCH responses and imaplib's response framing
    "fetch.FLAGS/escapes-without-close": lambda: fetch_response(
        b"* 1 FETCH (FLAGS (" + b"\\a" * (TEN_KB // 2)
    ),
    "fetch.item-name/without-space": lambda: fetch_response(b"* 1 FETCH (" + b"A." * (TEN_KB // 2)),
    "fetch.UID/digits-then-letter": lambda: fetch_response(
        b"* 1 FETCH (UID " + b"1" * TEN_KB + b"x"
    ),
    "fetch.INTERNALDATE/unclosed-quote": lambda: fetch_response(
        b'* 1 FETCH (INTERNALDATE "' + b"a" * TEN_KB
    ),
    "fetch.literal-at-end/digits-then-letter": lambda: fetch._LITERAL_AT_END.search(
        b"{" + b"1" * TEN_KB + b"x"
    ),
    "fetch.literal-at-end/many-openings": lambda: fetch._LITERAL_AT_END.search(
        b"{1" * (TEN_KB // 2)
    ),
    "fetch.tagged/no-spaces": lambda: fetch._TAGGED.match(b"A" * TEN_KB),
    "fetch.untagged/then-bang": lambda: fetch._UNTAGGED.match(b"* " + b"A-" * (TEN_KB // 2) + b"!"),
    "fetch.untagged-status/then-bang": lambda: fetch._UNTAGGED_STATUS.match(
        b"* " + b"1" * TEN_KB + b"!"
    ),
    "fetch.response-code/unclosed": lambda: fetch._RESPONSE_CODE.match(b"[A " + b"]x" * 5000),
    "connection.login-refusal/unclosed-code": lambda: connection.login_refusal(
        "NO [" * (TEN_KB // 4)
    ),
    # app/imap/message.py and its readers: headers and MIME structure of a received message
    "message.encoded-word/no-end": lambda: decode_header_value("=?" + "a" * TEN_KB),
    "message.encoded-word/many-starts": lambda: decode_header_value("=?a?q?" * (TEN_KB // 6)),
    "message.encoded-word/charset-runs": lambda: message(
        "Subject: " + "=?a=" * (TEN_KB // 4) + "?q?x"
    ),
    "message.boundary/token-then-space-x": lambda: message(
        "Content-Type: multipart/mixed; boundary=" + "a" * TEN_KB + " x"
    ),
    "message.boundary/unclosed-quote": lambda: message(
        'Content-Type: multipart/mixed; boundary="' + ";boundary=" * (TEN_KB // 10)
    ),
    "message.message-ids/openings": lambda: message("References: " + "<" * TEN_KB),
    "message.addresses/brackets": lambda: parse_addresses("<" * TEN_KB + "@"),
    "message.filename/unsafe-run": lambda: multipart(
        'Content-Disposition: attachment; filename="' + ':*?"' * (TEN_KB // 4) + '"\r\n\r\nx'
    ),
    "message.part-header/name-without-colon": lambda: part_transfer_encoding(
        b"a" * TEN_KB + b"\r\n"
    ),
    # app/api/emails/router.py: attachment media type and download filename
    "emails.media-type/then-bang": lambda: _MIME_TYPE.fullmatch("a" * TEN_KB + "!"),
    "emails.content-disposition/quotes-and-CRLF": lambda: content_disposition(
        '"%\\' * (TEN_KB // 3) + "\r\n"
    ),
}


def _time_case(name: str, results: Connection) -> None:
    """In the child: time one call and send its seconds."""
    started = time.perf_counter()
    with contextlib.suppress(Exception):  # refusing the input is fine; only the time counts
        CASES[name]()
    results.send(time.perf_counter() - started)


@pytest.fixture(scope="module")
def fork_server() -> multiprocessing.context.ForkServerContext:
    """Start a fork server with this module imported and wait until it forks.

    Each case is then forked from a single-threaded process that has every
    module loaded: the 5 s count the case alone, never imports on a busy machine.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    warm_up = context.Process(target=time.sleep, args=(0,))
    warm_up.start()
    warm_up.join()
    return context


@pytest.mark.parametrize("name", CASES)
def test_hostile_input_is_answered_in_linear_time(
    fork_server: multiprocessing.context.ForkServerContext, name: str
) -> None:
    receiving, sending = fork_server.Pipe(duplex=False)
    child = fork_server.Process(target=_time_case, args=(name, sending), daemon=True)
    child.start()
    child.join(KILL_AFTER_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(
            f"{name}: still running after {KILL_AFTER_SECONDS} s, killed;"
            " a regular expression backtracks catastrophically on this input"
        )
    assert child.exitcode == 0 and receiving.poll(), f"{name}: the case crashed (see stderr)"
    seconds: float = receiving.recv()
    assert seconds < ALLOWED_SECONDS, (
        f"{name}: took {seconds:.2f} s (allowed {ALLOWED_SECONDS} s); the time grows"
        " faster than the input"
    )
