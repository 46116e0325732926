"""A sync takes a slot of the connection budget before it connects, and says when it found none."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from app.config import Settings
from app.connection_budget import Pool, connection_budget
from app.db import session_scope
from app.db.models import Mailbox, SyncRun, SyncRunStatus, utcnow
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count, events_of

RECENT = utcnow() - timedelta(days=30)


def test_a_sync_without_a_free_slot_fails_waiting_for_one_and_is_retried_later(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.append("INBOX", make_message(), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    one_slot = settings.model_copy(
        update={"imap_max_connections_per_host": 1, "imap_slot_wait_seconds": 0.5}
    )
    host, _ = mail_user.address()

    with connection_budget(one_slot).slot(Pool.IMAP, host, "another-account", wait=0):
        waited = sync_mailbox(engine, mailbox_id, one_slot)

    assert waited is not None
    assert waited.status is SyncRunStatus.FAILED
    assert waited.error_code == "waiting_for_connection_slot"
    with session_scope(engine) as session:
        run = session.get(SyncRun, waited.run_id)
        mailbox = session.get(Mailbox, mailbox_id)
        assert run is not None
        assert mailbox is not None
        assert run.error is not None
        assert f"no connection slot to {host} within 0.5 s" in run.error
        assert "1 of 1 per-host connections in use" in run.error
        assert mailbox.next_sync_at is not None
        assert mailbox.next_sync_at > utcnow(), "retried later, on the transient backoff"
    assert events_of(engine, mailbox_id, "mailbox.sync_failed") == [], "nobody is told"
    assert email_count(engine, mailbox_id) == 0

    synced = sync_mailbox(engine, mailbox_id, one_slot)  # the slot is free again

    assert synced is not None
    assert synced.status is SyncRunStatus.SUCCEEDED
    assert email_count(engine, mailbox_id) == 1
    assert connection_budget(one_slot).usage(Pool.IMAP, host).in_use == 0, "given back"


def test_a_sync_with_redis_away_fails_and_is_retried_later(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    no_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})

    result = sync_mailbox(engine, mailbox_id, no_redis)

    assert result is not None
    assert result.status is SyncRunStatus.FAILED
    assert result.error_code == "connection_budget_unavailable"
    assert events_of(engine, mailbox_id, "mailbox.sync_failed") == []
