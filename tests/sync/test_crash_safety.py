"""A sync killed with SIGKILL at any point loses nothing and stores nothing twice.

The sync runs in a process of its own (`tests.support.sync_driver`) against the real Dovecot
and database. The test watches the database, kills the process at chosen points, checks
that what the crash left is exactly what the folder marks say is stored, then lets a run
complete and compares the result with the server.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Container
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import col, func, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, EmailFolder, Folder, Mailbox, SyncRunStatus, utcnow
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import Attachment, make_message
from tests.support.snapshot import events_of, folder_row, server_uids, stored_uids
from tests.support.sync_driver import Drivers

BATCH_SIZE = 20
FIRST_INBOX = 600
FIRST_SENT = 100
NEW_INBOX = 120
NEW_SENT = 10
FOLDERS = ("INBOX", "Sent")
RECENT = datetime.now(UTC) - timedelta(days=30)
# Messages of the batch a kill must hit carry this much: fetching them takes long enough
# for the test to see the batch started and kill the sync before it commits.
HEAVY_ATTACHMENT = Attachment("scan.bin", b"\x00" * 128 * 1024)
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)(?::(\d+))?\]")

Condition = Callable[[], bool]


def append_many(
    user: MailUser, folder: str, tag: str, count: int, heavy: Container[int] = ()
) -> list[int]:
    """APPEND `count` messages in one MULTIAPPEND (RFC 3502); return their UIDs.

    Message n has Message-ID <tag-n@example.com>; those numbered in `heavy` carry
    HEAVY_ATTACHMENT. Each is a copy of one built message with its number stamped in:
    building hundreds one by one would take seconds.
    """
    light, weighty = (
        make_message(subject="{tag} {n}", message_id="<{tag}-{n}@example.com>", attachments=a)
        for a in ((), (HEAVY_ATTACHMENT,))
    )
    messages = [
        {
            "msg": (weighty if n in heavy else light)
            .replace(b"{tag}", tag.encode())
            .replace(b"{n}", str(n).encode()),
            "date": RECENT + timedelta(minutes=n),
        }
        for n in range(count)
    ]
    client = user.client()
    try:
        _, [response] = client.multiappend(folder, messages)
    finally:
        client.logout()
    match = _APPENDUID.search(response)
    assert match is not None, response
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    assert last - first + 1 == count
    return list(range(first, last + 1))


def expected_message_ids(tag: str, count: int) -> set[str]:
    return {f"<{tag}-{n}@example.com>" for n in range(count)}


def stored_count(engine: Engine, mailbox_id: int) -> int:
    """Count the (folder, uid) links the mailbox holds: what committed batches stored."""
    with session_scope(engine) as session:
        statement = (
            select(func.count())
            .select_from(EmailFolder)
            .join(Folder, col(Folder.id) == EmailFolder.folder_id)
            .where(Folder.mailbox_id == mailbox_id)
        )
        return session.exec(statement).one()


def inbox_modseq(engine: Engine, mailbox_id: int) -> int | None:
    inbox = folder_row(engine, mailbox_id, "INBOX")
    return inbox.highestmodseq if inbox else None


def message_ids(engine: Engine, mailbox_id: int) -> Counter[str | None]:
    with session_scope(engine) as session:
        rows = session.exec(select(Email.message_id).where(Email.mailbox_id == mailbox_id)).all()
    return Counter(rows)


def unlinked_emails(engine: Engine, mailbox_id: int) -> int:
    with session_scope(engine) as session:
        linked = select(EmailFolder.id).where(col(EmailFolder.email_id) == Email.id)
        statement = select(func.count()).where(Email.mailbox_id == mailbox_id, ~linked.exists())
        return session.exec(statement).one()


def announced_ids(engine: Engine, mailbox_id: int) -> list[int]:
    """Every email id named by an `email.received` event, repeats included."""
    events = events_of(engine, mailbox_id, "email.received")
    return [email_id for event in events for email_id in event["email_ids"]]


def email_ids_of(engine: Engine, mailbox_id: int, message_ids: set[str]) -> list[int]:
    with session_scope(engine) as session:
        statement = select(Email.id).where(
            Email.mailbox_id == mailbox_id, col(Email.message_id).in_(message_ids)
        )
        return sorted(email_id for email_id in session.exec(statement) if email_id is not None)


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


def test_sigkill_mid_batch_then_rerun_loses_and_duplicates_nothing(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    settings = settings.model_copy(update={"sync_batch_size": BATCH_SIZE})
    server: dict[str, set[int]] = {}

    def stored_at_least(count: int) -> Condition:
        return lambda: stored_count(engine, mailbox_id) >= count

    def inbox_started() -> bool:
        return inbox_modseq(engine, mailbox_id) is not None  # marks fixed, first batch in flight

    def kill_and_check(process: subprocess.Popen[str], reached: Condition) -> int:
        """Kill the sync at `reached`, check what it left and return how much it stored."""
        kill_when(process, reached)
        assert_consistent(engine, mailbox_id, server)
        assert_dead_lease_left(engine, mailbox_id)
        return stored_count(engine, mailbox_id)

    first_sync_kills = [
        inbox_started,
        stored_at_least(FIRST_INBOX // 2),
        stored_at_least(FIRST_INBOX + BATCH_SIZE),  # in Sent
    ]
    killed_runs = len(first_sync_kills) + 2  # and two during the incremental sync
    with Drivers(settings, [[str(mailbox_id)]] * killed_runs) as drivers:
        newest = range(FIRST_INBOX - BATCH_SIZE, FIRST_INBOX)  # a first sync fetches these first
        server["INBOX"] = set(append_many(mail_user, "INBOX", "in", FIRST_INBOX, heavy=newest))
        server["Sent"] = set(append_many(mail_user, "Sent", "out", FIRST_SENT))
        left = [kill_and_check(drivers.start_next(), reached) for reached in first_sync_kills]
        assert left[0] == 0, "killed inside the first batch"
        assert 0 < left[1] < FIRST_INBOX
        assert FIRST_INBOX < left[2] < FIRST_INBOX + FIRST_SENT, "killed inside Sent"
        run_to_completion(engine, settings, mailbox_id)

        assert_complete(engine, mailbox_id, mail_user)
        assert message_ids(engine, mailbox_id).keys() == (
            expected_message_ids("in", FIRST_INBOX) | expected_message_ids("out", FIRST_SENT)
        )
        assert announced_ids(engine, mailbox_id) == []  # a first sync announces nothing

        checkpoint_modseq = inbox_modseq(engine, mailbox_id)
        oldest = range(BATCH_SIZE)  # new mail is fetched oldest first
        new_inbox = append_many(mail_user, "INBOX", "new", NEW_INBOX, heavy=oldest)
        new_sent = append_many(mail_user, "Sent", "new-out", NEW_SENT)
        server["INBOX"] |= set(new_inbox)
        server["Sent"] |= set(new_sent)
        before = stored_count(engine, mailbox_id)

        def new_mail_started() -> bool:
            return inbox_modseq(engine, mailbox_id) != checkpoint_modseq  # flags applied

        # Inside the first batch of new mail, then in the middle of it; what a killed run
        # committed, it announced (the outbox promise), and nothing else.
        assert kill_and_check(drivers.start_next(), new_mail_started) == before
        assert announced_ids(engine, mailbox_id) == []
        halfway = kill_and_check(drivers.start_next(), stored_at_least(before + 2 * BATCH_SIZE))
        assert before < halfway < before + NEW_INBOX
        assert_announced(engine, mailbox_id, expected_message_ids("new", NEW_INBOX))
    run_to_completion(engine, settings, mailbox_id)

    assert_complete(engine, mailbox_id, mail_user)
    new = expected_message_ids("new", NEW_INBOX) | expected_message_ids("new-out", NEW_SENT)
    assert_announced(engine, mailbox_id, new)  # all of them, as all are stored
