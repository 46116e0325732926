"""What a killed or interrupted sync must leave behind; the steps that kill, rerun or change it."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, SyncRunStatus, utcnow
from app.sync.folder_settings import FolderSyncSetting, save_folder_settings
from app.sync.folder_sync import SyncProgress
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.snapshot import (
    announced_ids,
    email_ids_of,
    folder_row,
    message_ids,
    server_uids,
    stored_uids,
    unlinked_emails,
)

FOLDERS = ("INBOX", "Sent")


Condition = Callable[[], bool]


def assert_announced(engine: Engine, mailbox_id: int, candidates: set[str]) -> None:
    """Check `email.received` named exactly the stored emails among `candidates`, once each."""
    stored = candidates & message_ids(engine, mailbox_id).keys()
    assert sorted(announced_ids(engine, mailbox_id)) == email_ids_of(engine, mailbox_id, stored)


def kill_when(process: subprocess.Popen[str], reached: Condition) -> None:
    """SIGKILL the running sync as soon as `reached()` holds."""
    deadline = time.monotonic() + 30
    while not reached():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the sync ended before the kill point: {out}{err}")
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def run_to_completion(engine: Engine, settings: Settings, mailbox_id: int) -> None:
    """Sync as the next worker would, in this process: one run finishes the job."""
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None
    assert (result.status, result.complete) == (SyncRunStatus.SUCCEEDED, True)


def expire_lease(engine: Engine, mailbox_id: int) -> None:
    """Move the mailbox's lease to its end, as if `sync_lease_seconds` had passed."""
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.lease_owner is not None
        mailbox.lease_expires_at = utcnow() - timedelta(seconds=1)


def assert_dead_lease_left(engine: Engine, mailbox_id: int) -> None:
    """Check the killed worker left its live lease behind: the next run must take it over
    at once (its holder is gone from this machine), not wait for it to expire."""
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.lease_owner is not None, "the killed worker gave its lease back"
        assert mailbox.lease_expires_at is not None
        assert mailbox.lease_expires_at > utcnow(), "the killed worker's lease expired already"


def assert_consistent(engine: Engine, mailbox_id: int, server: dict[str, set[int]]) -> None:
    """What a crash leaves: exactly the server's UIDs between each folder's marks, once each."""
    stored = stored_uids(engine, mailbox_id)
    for name in FOLDERS:
        folder = folder_row(engine, mailbox_id, name)
        if folder is None or folder.low_uid is None:
            expected: set[int] = set()
        else:
            marks = range(folder.low_uid, folder.last_seen_uid + 1)
            expected = {uid for uid in server[name] if uid in marks}
        assert stored.get(name, set()) == expected, name
    counts = message_ids(engine, mailbox_id)
    assert sum(counts.values()) == sum(len(uids) for uids in stored.values())
    assert [message_id for message_id, n in counts.items() if n > 1] == []
    assert unlinked_emails(engine, mailbox_id) == 0
    announced = announced_ids(engine, mailbox_id)
    assert len(announced) == len(set(announced)), "an email was announced twice"


def assert_complete(engine: Engine, mailbox_id: int, user: MailUser) -> None:
    """Everything on the server is stored once, and each checkpoint is the server's state."""
    server = server_uids(user, list(FOLDERS))
    assert stored_uids(engine, mailbox_id) == server
    assert_consistent(engine, mailbox_id, server)
    client = user.client()
    try:
        for name in FOLDERS:
            status = client.folder_status(name, [b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY"])
            folder = folder_row(engine, mailbox_id, name)
            assert folder is not None
            assert folder.backfill_done
            assert (folder.uidvalidity, folder.uidnext, folder.message_count) == (
                status[b"UIDVALIDITY"],
                status[b"UIDNEXT"],
                status[b"MESSAGES"],
            )
            assert (folder.low_uid, folder.last_seen_uid) == (min(server[name]), max(server[name]))
    finally:
        client.logout()


def once(change: Callable[[], None]) -> Callable[[SyncProgress], None]:
    """A progress callback that makes `change` on the server after the first stored batch."""
    done = threading.Event()

    def after_batch(_: SyncProgress) -> None:
        if not done.is_set():
            done.set()
            change()

    return after_batch


def enable_folder(engine: Engine, settings: Settings, mailbox_id: int, name: str) -> None:
    folder = folder_row(engine, mailbox_id, name)
    assert folder is not None
    assert folder.id is not None
    save_folder_settings(engine, settings, mailbox_id, [FolderSyncSetting(folder.id, True)])
