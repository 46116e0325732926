"""The crash row (--crash): how long a mailbox is away after its worker is SIGKILLed mid-sync.

    one user of CRASH_MESSAGES messages, registered -> `imap-bridge worker` 1, its sync queued
    -> SIGKILL once CRASH_KILL_AFTER messages are stored -> APPEND one new message
    -> `imap-bridge worker` 2 -> seconds from the kill to that message's `email.received`

Both workers run with the default SYNC_LEASE_SECONDS on this machine: the second
one gets the killed job once its in-progress mark lapses (two thirds of the lease)
and takes the dead run's lease over at once. The target is 60 s.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import Mailbox
from bench.corpus import CorpusSpec
from bench.fleet import register_mailboxes, seed_users
from bench.job import Measurement
from bench.table import Row
from tests.support.databases import ThrowawayDatabases
from tests.support.dovecot import Dovecot, MailUser
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count, events_of
from tests.support.worker_process import enqueue, wait_until, worker_process

CRASH_MESSAGES = 2_000
CRASH_KILL_AFTER = 200
CRASH_TARGET_SECONDS = 60
_WAIT_SECONDS = 300  # a row that takes longer fails


def crash_row(
    title: str,
    databases: ThrowawayDatabases,
    dovecot: Dovecot,
    secret_key: str,
    *,
    queue: tuple[str, str],
    work: Path,
) -> Row:
    """Measure one backend's crash row; `queue` is the Redis URL and a queue name for it."""
    spec = CorpusSpec(messages=CRASH_MESSAGES)
    users = seed_users(dovecot, f"crash-{title.lower()}", 1, spec)
    database_url = databases.create_migrated()
    sync_start = spec.start.date() - timedelta(days=1)  # the whole corpus
    register_mailboxes(database_url, secret_key, dovecot, users, sync_start=sync_start)
    redis_url, queue_name = queue
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_name=queue_name,
        secret_keys=[SecretStr(secret_key)],
        imap_ca_file=dovecot.ca_file,
        imap_allow_private_hosts=True,
    )
    [name] = users.names
    engine = create_db_engine(database_url)
    try:
        seconds = _kill_and_recover(settings, engine, MailUser(name, users.password, dovecot), work)
        stored = email_count(engine, _mailbox_id(engine))
    finally:
        engine.dispose()
    note = (
        f"{seconds:.1f} s from SIGKILL to email.received (target {CRASH_TARGET_SECONDS} s,"
        f" SYNC_LEASE_SECONDS {settings.sync_lease_seconds})"
    )
    if seconds > CRASH_TARGET_SECONDS:
        return Row(title, 2, None, note=note, outcome="failed")
    measurement = Measurement(seconds=seconds, messages=stored, bytes=0, figures={"mailboxes": 1})
    return Row(title, 2, measurement, note=note)


def _kill_and_recover(settings: Settings, engine: Engine, user: MailUser, work: Path) -> float:
    mailbox_id = _mailbox_id(engine)
    (work / "first").mkdir(parents=True)
    (work / "second").mkdir()
    with worker_process(settings, work / "first") as first:
        enqueue(settings, mailbox_id)
        wait_until(
            lambda: email_count(engine, mailbox_id) >= CRASH_KILL_AFTER,
            _WAIT_SECONDS,
            "the first worker stores mail",
        )
        first.process.kill()
        first.process.wait()
    killed_at = time.monotonic()
    user.append("INBOX", make_message(subject="arrived after the crash"))
    with worker_process(settings, work / "second"):
        wait_until(
            lambda: bool(events_of(engine, mailbox_id, "email.received")),
            _WAIT_SECONDS,
            "the new mail announced after the crash",
        )
        return time.monotonic() - killed_at


def _mailbox_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        [mailbox_id] = session.exec(select(Mailbox.id)).all()
    assert mailbox_id is not None
    return mailbox_id
