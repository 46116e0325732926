"""Mailbox health: each state, reached by real syncs of real Dovecot mailboxes (SQLite, PostgreSQL).

The other causes of `behind` (the queue, another worker's lease) and `disabled`
are in tests/api/test_mailbox_health.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.connection_budget import Pool, connection_budget
from app.db import session_scope
from app.db.models import SyncRunStatus, utcnow
from app.imap import Security
from app.sync.folder_sync import SyncProgress
from app.sync.health import MailboxHealth, mailbox_health
from app.sync.service import SyncResult, sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message

NOW = datetime.now(UTC)


def health_of(engine: Engine, mailbox_id: int, settings: Settings) -> MailboxHealth:
    with session_scope(engine) as session:
        health = mailbox_health(session, mailbox_id, settings, queue_depth=0, now=utcnow())
    assert health is not None, f"mailbox {mailbox_id} exists"
    return health


def run(engine: Engine, mailbox_id: int, settings: Settings) -> SyncResult:
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None, "the lease was free"
    return result


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting is refused while the test runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def test_a_synced_mailbox_is_healthy(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.append("INBOX", make_message(subject="in"), date=NOW - timedelta(days=3))
    mail_user.append("Sent", make_message(subject="out"), date=NOW - timedelta(days=2))
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)

    health = health_of(engine, mailbox_id, settings)

    assert health.state == "healthy", health.summary
    assert health.summary.startswith("Up to date: the last sync ended"), health.summary
    assert "next attempt in 29 min" in health.summary or "next attempt in 30 min" in health.summary
    assert health.blockers == []
    assert health.lag_seconds < 60
    assert health.last_success_at is not None
    assert health.since == health.last_success_at
    assert health.backfill.complete
    stored = {
        folder.full_name: (folder.stored, folder.estimated_total)
        for folder in health.backfill.folders
    }
    assert stored == {"INBOX": (1, 1), "Sent": (1, 1)}
    assert health.backfill.oldest_date_reached == (NOW - timedelta(days=3)).date()
    assert health.watch.state == "polling", "no watcher runs: the schedule keeps it current"


def test_a_first_sync_cut_by_its_time_budget_is_backfilling_with_its_progress(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    days_ago = [50, 40, 30, 20, 10, 5]
    for days in days_ago:
        message = make_message(subject=f"{days} d")
        mail_user.append("INBOX", message, date=NOW - timedelta(days=days))
        mail_user.append(
            "Sent", make_message(subject=f"re {days} d"), date=NOW - timedelta(days=days)
        )
    mailbox_id = add_mailbox(mail_user)
    budgeted = settings.model_copy(update={"sync_batch_size": 2, "sync_time_budget_seconds": 0.001})

    result = run(engine, mailbox_id, budgeted)
    health = health_of(engine, mailbox_id, budgeted)

    assert not result.complete, "the budget cut the first sync short"
    assert health.state == "backfilling", health.summary
    inbox, sent = health.backfill.folders
    assert (inbox.full_name, sent.full_name) == ("INBOX", "Sent")
    assert 2 <= inbox.stored < len(days_ago)
    assert not inbox.complete
    assert inbox.estimated_total == len(days_ago), "one message per UID left below the low mark"
    assert (sent.stored, sent.estimated_total) == (0, None), "inbox first; Sent not begun"
    assert not health.backfill.complete
    reached = health.backfill.oldest_date_reached
    assert reached == (NOW - timedelta(days=days_ago[-inbox.stored])).date()
    assert health.backfill.window_start == (utcnow() - timedelta(days=365)).date()
    assert health.summary == (
        f"First sync: {inbox.stored} messages stored so far, back to {reached.isoformat()};"
        " next run due now."
    )
    assert health.since is not None, "since the first sync began"
    assert health.blockers == []

    for _ in range(10):  # until every folder has begun and its total can be estimated
        run(engine, mailbox_id, budgeted)
        health = health_of(engine, mailbox_id, budgeted)
        if health.backfill.percent() is not None:
            break
    stored = sum(folder.stored for folder in health.backfill.folders)
    percent = 100 * stored // (2 * len(days_ago))
    assert health.state == "backfilling", health.summary
    assert health.summary.startswith(f"First sync {percent} % done, back to "), health.summary

    assert run(engine, mailbox_id, settings).complete
    assert health_of(engine, mailbox_id, settings).state == "healthy"


def test_a_mailbox_whose_sync_is_storing_mail_is_syncing(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.append("INBOX", make_message(subject="first"), date=NOW - timedelta(days=1))
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    mail_user.append("INBOX", make_message(subject="second"))
    storing, release = threading.Event(), threading.Event()

    def hold(_progress: SyncProgress) -> None:
        storing.set()
        assert release.wait(30), "the test released the run"

    sync = threading.Thread(
        target=sync_mailbox, args=(engine, mailbox_id, settings), kwargs={"progress": hold}
    )
    sync.start()
    try:
        assert storing.wait(30), "the run stored its batch"
        health = health_of(engine, mailbox_id, settings)
    finally:
        release.set()
        sync.join(30)

    assert health.state == "syncing", health.summary
    assert health.summary.startswith("Syncing now; the last sync ended"), health.summary
    assert health.since is not None
    assert utcnow() - health.since < timedelta(seconds=60)
    assert health_of(engine, mailbox_id, settings).state == "healthy"


def test_an_unreachable_server_is_retrying_with_the_failure_and_its_backoff(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    closed_port: int,
) -> None:
    mailbox_id = add_mailbox(mail_user, port=closed_port)

    result = run(engine, mailbox_id, settings)
    health = health_of(engine, mailbox_id, settings)

    assert (result.status, result.error_code) == (SyncRunStatus.FAILED, "unreachable")
    assert health.state == "retrying", health.summary
    assert [blocker.code for blocker in health.blockers] == ["unreachable", "backoff"]
    unreachable, backoff = health.blockers
    assert unreachable.since == health.since
    assert health.since is not None
    assert "after 1 failed attempt" in backoff.detail
    assert health.summary.startswith(f"Retrying since {health.since:%Y-%m-%d %H:%M} UTC: ")
    assert "(1 failed attempt); next attempt in" in health.summary
    assert health.next_attempt_at is not None
    assert health.next_attempt_at - utcnow() > timedelta(seconds=30), "retried in a minute"


def test_an_unreachable_server_is_failing_once_retries_slow_to_the_interval(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    closed_port: int,
) -> None:
    two_minutes = settings.model_copy(update={"sync_interval_minutes": 2})
    mailbox_id = add_mailbox(mail_user, port=closed_port)

    run(engine, mailbox_id, two_minutes)
    first = health_of(engine, mailbox_id, two_minutes)
    run(engine, mailbox_id, two_minutes)
    second = health_of(engine, mailbox_id, two_minutes)

    assert first.state == "retrying", "60 s: sooner than the interval"
    assert second.state == "failing", "120 s: the backoff reached the interval"
    assert second.since == first.since, "failing since the first failure"
    assert second.blockers[0].code == "unreachable"
    assert second.blockers[0].since == first.since
    assert "(2 failed attempts)" in second.summary


def test_a_tls_failure_is_failing_at_once(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user, port=mail_user.dovecot.plain_port, security=Security.SSL)

    result = run(engine, mailbox_id, settings)
    health = health_of(engine, mailbox_id, settings)

    assert result.error_code == "tls_error"
    assert health.state == "failing", health.summary
    assert health.blockers[0].code == "tls_error"
    assert "TLS failed" in health.blockers[0].detail
    assert health.summary.startswith("Failing since "), health.summary
    assert "next attempt in 30 min" in health.summary or "next attempt in 29 min" in health.summary


def test_a_refused_password_is_auth_failed(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    mail_user.set_password("a-new-password")

    run(engine, mailbox_id, settings)
    health = health_of(engine, mailbox_id, settings)

    assert health.state == "auth_failed", health.summary
    assert [blocker.code for blocker in health.blockers] == ["auth_failed", "backoff"]
    assert health.summary.startswith("The server refuses the credentials ("), health.summary
    assert health.watch.state == "off", "the watcher leaves an auth_failed mailbox alone"
    assert health.last_success_at is not None, "the first sync had succeeded"


def test_a_sync_that_found_no_connection_slot_is_behind_and_says_why(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    one_slot = settings.model_copy(
        update={"imap_max_connections_per_host": 1, "imap_slot_wait_seconds": 0.2}
    )
    mailbox_id = add_mailbox(mail_user)
    host, _ = mail_user.address()
    with connection_budget(one_slot).slot(Pool.IMAP, host, "another-account", wait=0):
        result = run(engine, mailbox_id, one_slot)

    health = health_of(engine, mailbox_id, one_slot)

    assert result.error_code == "waiting_for_connection_slot"
    assert health.state == "behind", health.summary
    assert health.blockers[0].code == "waiting_for_connection_slot"
    assert f"no connection slot to {host}" in health.blockers[0].detail
    assert "1 of 1 per-host connections in use" in health.summary, health.summary
