"""Judge a sync against the server: what was stored, what failed, who was told."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, EmailFolder, Folder, Mailbox, MailboxStatus, SyncRun, SyncRunStatus
from app.sync.folder_sync import ProgressCallback
from app.sync.service import SyncResult, sync_mailbox
from tests.support.imap_account import ImapAccount
from tests.support.snapshot import events_of, unlinked_emails

NETWORK_REASONS = {"connection_lost", "timeout", "unreachable"}
SYNCED_BY_DEFAULT = ("INBOX", "Sent")

# (folder, uid) -> Message-ID (None when the message has none)
MailMap = dict[tuple[str, int], str | None]
# (folder, uid) -> (Message-ID, the system flags the database keeps)
MessageMap = dict[tuple[str, int], tuple[str | None, frozenset[str]]]
STORED_FLAGS = {
    "seen": "\\Seen",
    "flagged": "\\Flagged",
    "answered": "\\Answered",
    "draft": "\\Draft",
}


def seed_from_environment(variable: str) -> int:
    """Return the seed `variable` names, else a fresh one: a randomized test can be replayed."""
    return int(os.environ.get(variable) or secrets.randbits(32))


@contextmanager
def replayed_with(variable: str, seed: int) -> Iterator[None]:
    """Add to whatever fails in the block how to run it again with the same seed."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(f"seed {seed}: replay with {variable}={seed}")
        raise


def sync(
    engine: Engine, settings: Settings, mailbox_id: int, progress: ProgressCallback | None = None
) -> SyncResult:
    """Run one sync as a worker would; the lease is always free in these tests."""
    result = sync_mailbox(engine, mailbox_id, settings, progress=progress)
    assert result is not None, "the lease was free"
    return result


def sync_to_completion(engine: Engine, settings: Settings, mailbox_id: int) -> None:
    result = sync(engine, settings, mailbox_id)
    assert (result.status, result.complete, result.error_code) == (
        SyncRunStatus.SUCCEEDED,
        True,
        None,
    )


def assert_failed_on_network(engine: Engine, mailbox_id: int, result: SyncResult) -> None:
    """A network fault fails the run with a network reason and tells nobody anything."""
    assert result.status is SyncRunStatus.FAILED
    assert result.error_code in NETWORK_REASONS
    with session_scope(engine) as session:
        run = session.get(SyncRun, result.run_id)
        mailbox = session.get(Mailbox, mailbox_id)
        assert run is not None
        assert mailbox is not None
        assert (run.status, run.error_code) == (SyncRunStatus.FAILED, result.error_code)
        assert mailbox.status is MailboxStatus.ACTIVE
    assert events_of(engine, mailbox_id, "mailbox.credentials_invalid") == []
    assert events_of(engine, mailbox_id, "mailbox.sync_failed") == []


def server_mail(user: ImapAccount, folders: Sequence[str]) -> MailMap:
    """Read every message of `folders` from the server: its place and its Message-ID."""
    found: MailMap = {}
    client = user.client()
    try:
        for folder in folders:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            for uid, data in client.fetch(uids, [b"ENVELOPE"]).items() if uids else ():
                message_id = data[b"ENVELOPE"].message_id
                found[(folder, uid)] = message_id.decode() if message_id else None
    finally:
        client.logout()
    return found


def server_messages(user: ImapAccount, folders: Sequence[str]) -> MessageMap:
    """Read every message of `folders`: its place, Message-ID and the system flags stored."""
    found: MessageMap = {}
    kept = set(STORED_FLAGS.values())
    client = user.client()
    try:
        for folder in folders:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            for uid, data in client.fetch(uids, [b"ENVELOPE", b"FLAGS"]).items() if uids else ():
                message_id = data[b"ENVELOPE"].message_id
                flags = frozenset(flag.decode() for flag in data[b"FLAGS"]) & kept
                found[(folder, uid)] = (message_id.decode() if message_id else None, flags)
    finally:
        client.logout()
    return found


def stored_messages(engine: Engine, mailbox_id: int) -> MessageMap:
    """What the database holds for the live folders, in the shape of `server_messages`."""
    columns = [col(getattr(Email, name)) for name in STORED_FLAGS]
    with session_scope(engine) as session:
        rows = session.exec(
            select(Folder.full_name, EmailFolder.uid, Email.message_id, *columns)
            .join(EmailFolder, col(EmailFolder.folder_id) == Folder.id)
            .join(Email, col(Email.id) == EmailFolder.email_id)
            .where(Folder.mailbox_id == mailbox_id, col(Folder.outdated_since).is_(None))
        ).all()
    found: MessageMap = {}
    for row in rows:
        flags = frozenset(flag for n, flag in enumerate(STORED_FLAGS.values(), 3) if row[n])
        found[(row[0], row[1])] = (row[2], flags)
    return found


def stored_links(engine: Engine, mailbox_id: int) -> dict[tuple[str, int], tuple[int, str | None]]:
    """Map each stored link of the live (not outdated) folders to its email and Message-ID."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Folder.full_name, EmailFolder.uid, Email.id, Email.message_id)
            .join(EmailFolder, col(EmailFolder.folder_id) == Folder.id)
            .join(Email, col(Email.id) == EmailFolder.email_id)
            .where(Folder.mailbox_id == mailbox_id, col(Folder.outdated_since).is_(None))
        ).all()
    links: dict[tuple[str, int], tuple[int, str | None]] = {}
    for folder, uid, email_id, message_id in rows:
        assert (folder, uid) not in links, f"{folder} UID {uid} is linked twice"
        assert email_id is not None
        links[(folder, uid)] = (email_id, message_id)
    return links


def assert_mirrors_server(
    engine: Engine, mailbox_id: int, user: ImapAccount, folders: Sequence[str] = SYNCED_BY_DEFAULT
) -> None:
    """Every message of `folders` is stored once, in its place; nothing else, nothing twice.

    A message copied into several folders is one email with several links; messages
    without a Message-ID are one email each. Folders deleted on the server keep their
    mail, marked outdated, so they are left out.
    """
    on_server = server_mail(user, folders)
    links = stored_links(engine, mailbox_id)
    assert {place: message_id for place, (_, message_id) in links.items()} == on_server
    emails = dict(links.values())
    repeated = [mid for mid, n in Counter(emails.values()).items() if mid is not None and n > 1]
    assert repeated == [], "stored twice"
    distinct_on_server = {mid for mid in on_server.values() if mid is not None}
    without_id = sum(mid is None for mid in on_server.values())
    assert len(emails) == len(distinct_on_server) + without_id
    assert unlinked_emails(engine, mailbox_id) == 0
