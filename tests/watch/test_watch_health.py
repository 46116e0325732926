"""A mailbox's watch state in its health, from a real `imap-bridge watch` process's lease.

The suite's Dovecot, the machine's Redis and both databases; the watch lease is
shortened to two seconds so that a killed watcher's lease runs out quickly.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import utcnow
from app.sync.health import WatchHealth, mailbox_health
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.worker_process import wait_until, worker_process

SECONDS = 30  # what "within seconds" may take on a loaded 2-core machine
WATCH_ENVIRONMENT = {
    "WATCH_LEASE_SECONDS": "2",
    "WATCH_REFRESH_SECONDS": "0.3",
    "WATCH_CONNECT_RATE": "50",
}


def watch_of(engine: Engine, mailbox_id: int, settings: Settings) -> WatchHealth:
    with session_scope(engine) as session:
        health = mailbox_health(session, mailbox_id, settings, queue_depth=0, now=utcnow())
    assert health is not None
    return health.watch


def test_a_watched_mailbox_is_watching_and_reconnecting_once_its_watcher_dies(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    assert sync_mailbox(engine, mailbox_id, settings) is not None
    assert watch_of(engine, mailbox_id, settings).state == "polling", "no watcher yet"

    with worker_process(
        settings, tmp_path, environment=WATCH_ENVIRONMENT, command="watch"
    ) as watcher:
        wait_until(
            lambda: watch_of(engine, mailbox_id, settings).state == "watching",
            SECONDS,
            "the watcher took the mailbox",
        )
        os.kill(watcher.process.pid, signal.SIGKILL)
        watcher.process.wait()
        killed_at = utcnow()
        wait_until(
            lambda: watch_of(engine, mailbox_id, settings).state == "reconnecting",
            SECONDS,
            "the dead watcher's lease ran out",
        )

    watch = watch_of(engine, mailbox_id, settings)
    assert watch.since is not None, "since its lease ran out"
    assert watch.since <= utcnow()
    assert watch.since - killed_at < timedelta(seconds=3), "within the two-second lease"
