"""Requests that talk to IMAP servers are bounded in time, memory and number.

Hostile servers (tests/support/hostile_imap.py) drip or announce huge literals; the
streamed downloads run against the real Dovecot with small chunks.
"""

from __future__ import annotations

import hashlib
import random
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.hostile_imap import hostile_imap_server, wait_for_connections
from tests.support.live_api import LiveApi
from tests.support.mailgen import Attachment, make_message

OPERATION_TIMEOUT = 1.5
IMAP_SLOTS = 2
CHUNK_BYTES = 64 * 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "imap_operation_timeout": OPERATION_TIMEOUT,
            "api_imap_concurrency": IMAP_SLOTS,
            "api_rate_limit_per_minute": 1000,
            "imap_download_chunk_bytes": CHUNK_BYTES,
        }
    )


def hostile_check(port: int) -> dict[str, Any]:
    return {
        "imap": {"host": "127.0.0.1", "port": port, "security": "none", "username": "victim"},
        "auth": {"type": "password", "password": "not-a-secret"},
    }


def test_a_connection_check_of_a_dripping_server_answers_504_at_the_deadline(
    live_api: LiveApi,
) -> None:
    with hostile_imap_server("drip", drip_interval=0.1) as server:
        started = time.monotonic()
        try:
            answer = live_api.client.post(
                "/v1/connection/check", json=hostile_check(server.port), timeout=10
            )
        except httpx.ReadTimeout:
            pytest.fail("the check was still waiting on the dripping server after 10 s")
        waited = time.monotonic() - started

    assert (answer.status_code, answer.json()["code"]) == (504, "timeout"), answer.text
    assert waited < OPERATION_TIMEOUT + 2, f"answered after {waited:.1f} s"


def test_a_connection_check_of_a_server_announcing_a_huge_literal_answers_502(
    live_api: LiveApi,
) -> None:
    with hostile_imap_server("literal") as server:
        answer = live_api.client.post(
            "/v1/connection/check", json=hostile_check(server.port), timeout=10
        )

    assert (answer.status_code, answer.json()["code"]) == (502, "response_too_large"), answer.text


def test_database_routes_answer_while_dripping_servers_hold_every_imap_slot(
    live_api: LiveApi,
) -> None:
    checks_sent = 45  # more than the API's whole request thread pool (40)
    with (
        hostile_imap_server("drip") as server,
        ThreadPoolExecutor(checks_sent) as senders,
    ):
        checks = [
            senders.submit(
                live_api.client.post,
                "/v1/connection/check",
                json=hostile_check(server.port),
                timeout=20,
            )
            for _ in range(checks_sent)
        ]
        wait_for_connections(server, IMAP_SLOTS)
        timings = []
        for _ in range(5):
            started = time.monotonic()
            try:
                listed = live_api.client.get("/v1/mailboxes", timeout=5)
            except httpx.ReadTimeout:
                pytest.fail("GET /v1/mailboxes starved behind the connection checks for 5 s")
            timings.append(time.monotonic() - started)
            assert listed.status_code == 200, listed.text
        server.stop()  # before the answers: on failure, stuck checks end now
        answers = [check.result() for check in checks]

    assert max(timings) < 2, f"database route answered in {timings} s"
    refused = [answer for answer in answers if answer.status_code == 503]
    assert refused, "no check was refused although every IMAP slot was taken"
    for answer in refused:
        assert answer.json()["code"] == "imap_busy", answer.text
        assert int(answer.headers["Retry-After"]) > 0
    assert {answer.status_code for answer in answers} <= {503, 504, 502}


NOW = datetime.now(UTC)
BIG_ATTACHMENT = random.Random(5).randbytes(3 * 1024 * 1024)


def test_source_and_attachment_of_a_big_message_stream_in_chunks_byte_for_byte(
    engine: Engine,
    settings: Settings,
    live_api: LiveApi,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    raw = make_message(
        subject="big", attachments=(Attachment("data.bin", BIG_ATTACHMENT),), date=NOW
    )
    mail_user.append("INBOX", raw, date=NOW - timedelta(days=1))
    mailbox_id = add_mailbox(mail_user)
    sync_mailbox(engine, mailbox_id, settings)
    [email] = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/emails").json()["items"]

    source_digest, source_peak = streamed(live_api, f"/v1/emails/{email['id']}/raw")
    attachment_digest, attachment_peak = streamed(
        live_api, f"/v1/emails/{email['id']}/attachments/0"
    )

    assert source_digest == hashlib.sha256(raw).hexdigest(), "the source differs from the server's"
    assert attachment_digest == hashlib.sha256(BIG_ATTACHMENT).hexdigest()
    # The message is over 4 MB; a download holds a few 64 KiB chunks (and the app its own).
    assert source_peak < 2_000_000, f"the source download allocated {source_peak} bytes at once"
    assert attachment_peak < 2_000_000, f"the download allocated {attachment_peak} bytes at once"


def test_remote_search_fetches_what_it_answers_never_the_message(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    raw = make_message(subject="big", attachments=(Attachment("data.bin", BIG_ATTACHMENT),))
    mail_user.append("INBOX", raw)
    mailbox_id = add_mailbox(mail_user)

    tracemalloc.start()
    try:
        answer = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/search", json={"subject": "big"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answer.status_code == 200, answer.text
    [hit] = answer.json()["items"]
    assert (hit["subject"], hit["size"], hit["has_attachments"]) == ("big", len(raw), True)
    assert peak < 2_000_000, f"a search for one 4 MB message allocated {peak} bytes at once"


def streamed(live_api: LiveApi, path: str) -> tuple[str, int]:
    """Download `path` chunk by chunk; return its digest and the process's peak allocation.

    The API runs in this process (uvicorn in a thread), so tracemalloc sees what
    the download costs the server.
    """
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with live_api.client.stream("GET", path) as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_raw(CHUNK_BYTES):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return digest.hexdigest(), peak
