"""Another mail client changes the mailbox for a minute while syncs run back to back.

A thread with its own IMAP session plays that client: a seeded random mix of APPEND
(with flags), STORE of system flags and keywords, UID MOVE between the synced folders
and UID EXPUNGE. Meanwhile this thread syncs the mailbox as the worker would, one run
after another. Once the writer stops, one last run must leave the database equal to
the server, message by message: UIDs, flags, Message-ID and content per folder, the
folders' UIDVALIDITY, no email stored twice, no link to a vanished UID.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from imapclient import IMAPClient
from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, EmailFolder, Folder, SyncRunStatus
from app.sync.service import SyncResult
from tests.support.crash_checks import enable_folder, once
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import append_many, make_message
from tests.support.mirror import (
    replayed_with,
    seed_from_environment,
    sync,
    sync_to_completion,
)
from tests.support.snapshot import announced_ids, unlinked_emails

DURATION = 60.0  # seconds of concurrent writing, as the issue asks
FOLDERS = ("INBOX", "Sent", "Projects")  # all synced; Projects is enabled by the test
SEED_VARIABLE = "CONCURRENT_WRITER_SEED"
# The system flags the database keeps (Email columns); keywords change MODSEQ only.
STORED_FLAGS = {
    "\\Seen": "seen",
    "\\Flagged": "flagged",
    "\\Answered": "answered",
    "\\Draft": "draft",
}
WRITER_FLAGS = (*STORED_FLAGS, "$Work", "$Later")
OPERATIONS = {"append": 3, "store": 4, "move": 2, "expunge": 1}  # relative weights
RECENT = datetime.now(UTC) - timedelta(days=3)

Place = tuple[str, int]  # (folder, uid)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What a message looks like, on the server or in the database, for comparison."""

    flags: frozenset[str]
    message_id: str | None
    subject: str | None
    text: str


@dataclass
class Writer:
    """The other mail client: random changes through one IMAP session until told to stop."""

    user: MailUser
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    operations: Counter[str] = field(default_factory=Counter)  # commands that changed mail
    messages: Counter[str] = field(default_factory=Counter)  # messages they changed
    vanished: set[Place] = field(default_factory=set)  # expunged, or moved away
    error: BaseException | None = None
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    def run(self) -> None:
        client = self.user.client()
        operations: dict[str, Callable[[IMAPClient], int]] = {
            "append": self._append,
            "store": self._store,
            "move": self._move,
            "expunge": self._expunge,
        }
        try:
            while not self.stop.is_set():
                [name] = self.rng.choices(list(OPERATIONS), list(OPERATIONS.values()))
                changed = operations[name](client)
                self.operations[name] += changed > 0
                self.messages[name] += changed
        except BaseException as exc:  # handed to the test's thread by `join`
            self.error = exc
        finally:
            try:
                client.logout()
            except (IMAPClient.Error, OSError):  # already broken; keep the first error
                client.shutdown()

    def join(self, thread: threading.Thread) -> None:
        self.stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the writer did not stop"
        if self.error is not None:
            raise AssertionError("the writer failed") from self.error

    def _append(self, client: IMAPClient) -> int:
        n = next(self._numbers)
        message = make_message(
            subject=f"writer {n}",
            message_id=f"<writer-{n}@example.com>",
            text=f"Message {n} of the other client.\n",
            date=RECENT + timedelta(seconds=n),
        )
        flags = self.rng.sample(WRITER_FLAGS, self.rng.randint(0, 2))
        client.append(self.rng.choice(FOLDERS), message, flags=flags, msg_time=RECENT)
        return 1

    def _store(self, client: IMAPClient) -> int:
        uids = self._pick(client, self.rng.choice(FOLDERS), 5)
        flags = self.rng.sample(WRITER_FLAGS, self.rng.randint(1, 2))
        change = client.add_flags if self.rng.random() < 0.5 else client.remove_flags
        if uids:
            change(uids, flags, silent=True)
        return len(uids)

    def _move(self, client: IMAPClient) -> int:
        source, target = self.rng.sample(FOLDERS, 2)
        uids = self._pick(client, source, 3)
        if uids:
            client.move(uids, target)
            self.vanished.update((source, uid) for uid in uids)
        return len(uids)

    def _expunge(self, client: IMAPClient) -> int:
        folder = self.rng.choice(FOLDERS)
        uids = self._pick(client, folder, 3)
        if uids:
            client.add_flags(uids, ["\\Deleted"], silent=True)
            client.uid_expunge(uids)
            self.vanished.update((folder, uid) for uid in uids)
        return len(uids)

    def _pick(self, client: IMAPClient, folder: str, most: int) -> list[int]:
        """Select `folder` and choose up to `most` of its messages at random."""
        client.select_folder(folder)
        uids: list[int] = sorted(client.search("ALL"))
        return self.rng.sample(uids, min(len(uids), self.rng.randint(1, most)))


def server_messages(user: MailUser, folders: Sequence[str]) -> dict[Place, StoredMessage]:
    """Read every message of `folders` afresh from the server."""
    found: dict[Place, StoredMessage] = {}
    client = user.client()
    try:
        for folder in folders:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            items = [b"FLAGS", b"ENVELOPE", b"BODY.PEEK[TEXT]"]
            for uid, data in client.fetch(uids, items).items() if uids else ():
                envelope = data[b"ENVELOPE"]
                flags = {flag.decode() for flag in data[b"FLAGS"]}
                found[(folder, uid)] = StoredMessage(
                    flags=frozenset(flags & STORED_FLAGS.keys()),
                    message_id=envelope.message_id.decode() if envelope.message_id else None,
                    subject=envelope.subject.decode() if envelope.subject else None,
                    text=data[b"BODY[TEXT]"].decode().replace("\r\n", "\n").strip(),
                )
    finally:
        client.logout()
    return found


def stored_messages(engine: Engine, mailbox_id: int) -> dict[Place, StoredMessage]:
    """Read every link of the mailbox (whatever its folder) with the email it points to."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Folder.full_name, EmailFolder.uid, Email)
            .join(EmailFolder, col(EmailFolder.folder_id) == Folder.id)
            .join(Email, col(Email.id) == EmailFolder.email_id)
            .where(Folder.mailbox_id == mailbox_id)
        ).all()
    found: dict[Place, StoredMessage] = {}
    for folder, uid, email in rows:
        flags = {flag for flag, column in STORED_FLAGS.items() if getattr(email, column)}
        found[(folder, uid)] = StoredMessage(
            flags=frozenset(flags),
            message_id=email.message_id,
            subject=email.subject,
            text=(email.text_body or "").replace("\r\n", "\n").strip(),
        )
    return found


def assert_folders_match(engine: Engine, mailbox_id: int, user: MailUser) -> None:
    """Same folder list as the server's; each synced folder's checkpoint is the server's."""
    client = user.client()
    try:
        listed = {name for _, _, name in client.list_folders()}
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"HIGHESTMODSEQ"]
        status = {name: client.folder_status(name, items) for name in FOLDERS}
    finally:
        client.logout()
    with session_scope(engine) as session:
        folders = session.exec(select(Folder).where(Folder.mailbox_id == mailbox_id)).all()
    assert {f.full_name for f in folders if f.outdated_since is None} == listed
    assert {f.full_name for f in folders if f.sync_enabled} == set(FOLDERS)
    for folder in folders:
        if folder.sync_enabled:
            on_server = status[folder.full_name]
            assert (
                folder.uidvalidity,
                folder.uidnext,
                folder.message_count,
                folder.highestmodseq,
            ) == (
                on_server[b"UIDVALIDITY"],
                on_server[b"UIDNEXT"],
                on_server[b"MESSAGES"],
                on_server[b"HIGHESTMODSEQ"],
            ), folder.full_name


def sync_totals(results: Sequence[SyncResult]) -> dict[str, int]:
    return {
        "new": sum(result.counts.new for result in results),
        "flags_changed": sum(result.counts.flags_changed for result in results),
        "expunged": sum(result.counts.expunged for result in results),
    }


@pytest.mark.slow
def test_a_minute_of_another_clients_changes_during_syncs_ends_with_the_server_state(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    seed = seed_from_environment(SEED_VARIABLE)
    mail_user.create_folder("Projects")
    for folder, tag in zip(FOLDERS, ("in", "out", "project"), strict=True):
        append_many(mail_user, folder, tag, 100)
    mailbox_id = add_mailbox(mail_user)
    sync_to_completion(engine, settings, mailbox_id)
    enable_folder(engine, settings, mailbox_id, "Projects")
    sync_to_completion(engine, settings, mailbox_id)  # every later run is incremental

    writer = Writer(mail_user, random.Random(seed))
    thread = threading.Thread(target=writer.run, name="other-mail-client")
    results: list[SyncResult] = []
    with replayed_with(SEED_VARIABLE, seed):
        started = time.monotonic()
        thread.start()
        try:
            while time.monotonic() - started < DURATION and thread.is_alive():
                results.append(sync(engine, settings, mailbox_id))
        finally:
            writer.join(thread)
        sync_to_completion(engine, settings, mailbox_id)

        on_server = server_messages(mail_user, FOLDERS)
        announced = announced_ids(engine, mailbox_id)
        print(
            f"\nseed {seed}: the other client made {writer.operations.total()} changes "
            f"{dict(writer.operations)} to {writer.messages.total()} messages "
            f"{dict(writer.messages)} in {time.monotonic() - started:.1f} s; {len(results)} "
            f"syncs ran meanwhile {sync_totals(results)}; {len(on_server)} messages at the "
            f"end; {len(announced)} emails announced"
        )
        assert [r.error_code for r in results if r.status is not SyncRunStatus.SUCCEEDED] == []
        assert len(results) >= 3, "syncs ran while the other client wrote"
        assert writer.operations.keys() == OPERATIONS.keys(), "every kind of change was made"

        stored = stored_messages(engine, mailbox_id)
        assert stored.keys() == on_server.keys()  # UIDs, folder by folder
        mismatched = {p: (stored[p], on_server[p]) for p in on_server if stored[p] != on_server[p]}
        assert mismatched == {}  # flags, Message-ID, subject and text, message by message
        assert writer.vanished.isdisjoint(stored), "a link to an expunged or moved-away UID"
        assert_folders_match(engine, mailbox_id, mail_user)
        message_ids = Counter(message.message_id for message in on_server.values())
        assert len(message_ids) == len(on_server), "each message is on the server once"
        with session_scope(engine) as session:
            stored_ids = session.exec(
                select(Email.message_id).where(Email.mailbox_id == mailbox_id)
            ).all()
        assert Counter(stored_ids) == message_ids, "every email stored once"
        assert unlinked_emails(engine, mailbox_id) == 0
        assert len(announced) == len(set(announced)), "an email was announced twice"
        # Only appended mail is new: a moved message keeps its email and is not announced.
        assert len(announced) <= writer.messages["append"], "moved mail announced as new"


def email_id_of(engine: Engine, mailbox_id: int, message_id: str) -> int | None:
    with session_scope(engine) as session:
        return session.exec(
            select(Email.id).where(Email.mailbox_id == mailbox_id, Email.message_id == message_id)
        ).one_or_none()


def test_mail_moved_into_a_folder_the_run_already_passed_keeps_its_email_unannounced(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    append_many(mail_user, "INBOX", "in", 5)
    [moving] = append_many(mail_user, "Sent", "out", 1)
    mailbox_id = add_mailbox(mail_user)
    sync_to_completion(engine, settings, mailbox_id)
    email_id = email_id_of(engine, mailbox_id, "<out-0@example.com>")
    append_many(mail_user, "INBOX", "new", 1)  # INBOX stores a batch, so `once` fires
    append_many(mail_user, "Sent", "new-out", 1)  # and Sent is selected after it

    def move_to_inbox() -> None:  # once INBOX is done, before Sent is selected
        mail_user.move("Sent", [moving], "INBOX")

    sync(engine, settings, mailbox_id, progress=once(move_to_inbox))
    sync_to_completion(engine, settings, mailbox_id)

    announced = announced_ids(engine, mailbox_id)
    assert email_id_of(engine, mailbox_id, "<new-0@example.com>") in announced
    assert email_id_of(engine, mailbox_id, "<out-0@example.com>") == email_id, "moves are links"
    assert email_id not in announced, "old mail announced as new"
