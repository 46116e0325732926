"""Requests answered from the database take turns; those waiting on a server do not."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import ApiKey, utcnow
from app.main import create_app
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import create_api_key, serving
from tests.support.secret_watch import SecretKind, register_secret

IMAP_TIMEOUT = 3.0


@pytest.fixture
def one_turn(engine: Engine, settings: Settings) -> Iterator[httpx.Client]:
    """A live API with a single database turn, and a client holding a fresh key."""
    settings = settings.model_copy(
        update={"api_database_concurrency": 1, "imap_connect_timeout": IMAP_TIMEOUT}
    )
    headers = {"Authorization": f"Bearer {create_api_key(engine)}"}
    with (
        serving(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, headers=headers, timeout=30) as client,
    ):
        yield client


def test_database_routes_answer_while_connection_checks_wait_on_a_silent_server(
    one_turn: httpx.Client, mail_user: MailUser
) -> None:
    password = register_secret(SecretKind.IMAP_PASSWORD, mail_user.password, "connection check")
    with socket.socket() as silent, ThreadPoolExecutor(4) as pool:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts the TCP handshake, never says a word
        body = {
            "imap": {
                "host": "127.0.0.1",
                "port": silent.getsockname()[1],
                "security": "ssl",
                "username": mail_user.name,
            },
            "auth": {"type": "password", "password": password},
        }
        checks = [pool.submit(one_turn.post, "/v1/connection/check", json=body) for _ in range(3)]
        time.sleep(0.5)  # the three are waiting for the server's greeting

        timings = []
        for _ in range(5):
            started = time.monotonic()
            listed = one_turn.get("/v1/mailboxes")
            timings.append(time.monotonic() - started)
            assert listed.status_code == 200, listed.text
        answers = [check.result() for check in checks]

    assert max(timings) < IMAP_TIMEOUT / 3, timings
    assert [answer.status_code for answer in answers] == [504] * 3


def test_requests_beyond_the_turns_wait_their_turn_and_all_succeed(
    one_turn: httpx.Client, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    paths = [
        f"/v1/mailboxes/{mailbox_id}/emails",
        f"/v1/mailboxes/{mailbox_id}/folders",
        f"/v1/mailboxes/{mailbox_id}",
        "/v1/mailboxes",
        f"/v1/mailboxes/{mailbox_id}/sync-runs",
    ]
    alone = {path: one_turn.get(path) for path in paths}

    with ThreadPoolExecutor(20) as pool:
        together = list(pool.map(one_turn.get, paths * 8))

    assert all(answer.status_code == 200 for answer in alone.values())
    assert [(a.status_code, a.json()) for a in together] == [
        (200, alone[path].json()) for path in paths * 8
    ]


def test_a_revoked_key_is_refused_within_a_second(engine: Engine, settings: Settings) -> None:
    key = create_api_key(engine, "soon revoked")
    with (
        serving(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        assert client.get("/v1/mailboxes").status_code == 200
        with session_scope(engine) as session:
            row = session.exec(select(ApiKey).where(ApiKey.name == "soon revoked")).one()
            row.revoked_at = utcnow()
        revoked = time.monotonic()
        while (answer := client.get("/v1/mailboxes")).status_code == 200:
            assert time.monotonic() - revoked < 1.5, "the revoked key still works"
            time.sleep(0.05)
        again = client.get("/v1/mailboxes")

    assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized")
    assert again.status_code == 401
