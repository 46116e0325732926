"""Drive one mailbox of any server of the rig and compare the database with the server.

A scenario written with `MatrixServer` (how a server names its folders) and `Mirror`
(sync, then compare message by message) runs unchanged on Dovecot, Cyrus and Courier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, Folder, SyncRun, SyncRunStatus
from app.imap import Security
from app.sync.service import SyncResult
from tests.support.debian_servers import Courier, Cyrus
from tests.support.dovecot import Dovecot
from tests.support.imap_account import ImapAccount
from tests.support.mailgen import make_message
from tests.support.mirror import MessageMap, server_messages, stored_messages, sync
from tests.support.snapshot import events_of

NOW = datetime.now(UTC)
RECENT = NOW - timedelta(days=30)
OLD = NOW - timedelta(days=400)


@dataclass(frozen=True)
class MatrixServer:
    """One server of the matrix and how its folders are named."""

    name: str
    add_user: Callable[[], ImapAccount]
    prefix: str  # the personal namespace's prefix (RFC 2342)
    separator: str
    condstore: bool
    # How the mailbox reaches it, where `add_mailbox`'s default does not fit.
    connection: dict[str, object] = field(default_factory=dict)

    def folder(self, *path: str) -> str:
        return self.prefix + self.separator.join(path)

    @property
    def sent(self) -> str:
        return self.folder("Sent")


def matrix_server(name: str, request: pytest.FixtureRequest) -> MatrixServer:
    if name in ("dovecot", "legacy_dovecot"):
        dovecot: Dovecot = request.getfixturevalue(name)
        if name == "dovecot":
            return MatrixServer(name, dovecot.add_user, "", "/", condstore=True)
        # Its TLS certificate comes from a CA of its own: the test settings trust another.
        plain = {"port": dovecot.plain_port, "security": Security.NONE}
        return MatrixServer(name, dovecot.add_user, "", "/", condstore=False, connection=plain)
    if name == "cyrus":
        cyrus: Cyrus = request.getfixturevalue("cyrus")
        return MatrixServer(name, cyrus.add_user, "", "/", condstore=True)
    courier: Courier = request.getfixturevalue("courier")
    return MatrixServer(name, courier.add_user, "INBOX.", ".", condstore=False)


class Mirror:
    """Sync one mailbox and compare it with the server after every step."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        mailbox_id: int,
        user: ImapAccount,
        folders: list[str],
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.mailbox_id = mailbox_id
        self.user = user
        self.folders = folders
        # Message-IDs of mail older than the window at the first sync: never stored.
        self.outside_window: set[str] = set()

    def sync(self, step: str) -> SyncResult:
        result = sync(self.engine, self.settings, self.mailbox_id)
        if result.status is not SyncRunStatus.SUCCEEDED:
            with session_scope(self.engine) as session:
                run = session.get(SyncRun, result.run_id)
                raise AssertionError(f"{step}: the sync failed: {run.error if run else result}")
        assert result.complete, f"{step}: the sync did not complete"
        self.assert_mirrored(step)
        return result

    def expected(self) -> MessageMap:
        on_server = server_messages(self.user, self.folders)
        return {
            place: message
            for place, message in on_server.items()
            if message[0] not in self.outside_window
        }

    def stored(self) -> MessageMap:
        return stored_messages(self.engine, self.mailbox_id)

    def assert_mirrored(self, step: str) -> None:
        expected = self.expected()
        stored = self.stored()
        missing = {place: expected[place] for place in expected.keys() - stored.keys()}
        extra = {place: stored[place] for place in stored.keys() - expected.keys()}
        differ = {
            place: (stored[place], expected[place])
            for place in stored.keys() & expected.keys()
            if stored[place] != expected[place]
        }
        assert (missing, extra, differ) == ({}, {}, {}), (
            f"after {step}, the database differs from the server: "
            f"missing {missing}, not on the server {extra}, (stored, server) {differ}"
        )

    def announced(self) -> list[str | None]:
        """The Message-IDs of every email announced by `email.received`, in order."""
        ids = [
            i
            for event in events_of(self.engine, self.mailbox_id, "email.received")
            for i in event["email_ids"]
        ]
        with session_scope(self.engine) as session:
            rows = session.exec(select(Email.id, Email.message_id).where(col(Email.id).in_(ids)))
            found = dict(rows.all())
        return [found[i] for i in ids]


def new_message(subject: str) -> tuple[bytes, str]:
    message_id = f"<{subject.replace(' ', '-')}-{datetime.now(UTC).timestamp()}@matrix.test>"
    return make_message(subject=subject, message_id=message_id), message_id


def append(
    user: ImapAccount, folder: str, subject: str, date: datetime, flags: tuple[str, ...] = ()
) -> tuple[int, str]:
    message, message_id = new_message(subject)
    return user.append(folder, message, flags=flags, date=date), message_id


def enable_sync(engine: Engine, mailbox_id: int, names: list[str]) -> None:
    with session_scope(engine) as session:
        for name in names:
            folder = session.exec(
                select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.full_name == name)
            ).one()
            folder.sync_enabled = True
