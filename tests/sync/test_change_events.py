"""Changes to stored mail reach the outbox once: `email.updated` and `email.deleted`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, Event, Folder
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message

RECENT = datetime.now(UTC) - timedelta(days=3)
CHANGE_EVENTS = ("email.received", "email.updated", "email.deleted", "folder.reset")


def sync(engine: Engine, mailbox_id: int, settings: Settings, *folders: str) -> None:
    """Sync the mailbox (only `folders` when named, as a run the watcher queues)."""
    result = sync_mailbox(engine, mailbox_id, settings, folders=frozenset(folders) or None)
    assert result is not None, "the lease was free"
    assert result.complete, "the run finished"


def change_events(engine: Engine, mailbox_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The change events of the mailbox in the outbox, oldest first."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Event.type, Event.data)
            .where(Event.mailbox_id == mailbox_id, col(Event.type).in_(CHANGE_EVENTS))
            .order_by(col(Event.id))
        ).all()
    return [(event_type, dict(data)) for event_type, data in rows]


@dataclass
class SyncedMailbox:
    """A test user's mailbox after its first sync: what later syncs announce, and its rows."""

    engine: Engine
    settings: Settings
    mailbox_id: int
    events_before: int = 0

    def sync(self, *folders: str) -> None:
        sync(self.engine, self.mailbox_id, self.settings, *folders)

    def announced(self) -> list[tuple[str, dict[str, Any]]]:
        """The change events since the first sync."""
        return change_events(self.engine, self.mailbox_id)[self.events_before :]

    def email_id(self, subject: str) -> int:
        return self._only(
            select(Email.id).where(Email.mailbox_id == self.mailbox_id, Email.subject == subject)
        )

    def folder_id(self, full_name: str) -> int:
        return self._only(
            select(Folder.id).where(
                Folder.mailbox_id == self.mailbox_id, Folder.full_name == full_name
            )
        )

    def _only(self, statement: SelectOfScalar[Any]) -> int:
        """The one id `statement` finds."""
        with session_scope(self.engine) as session:
            [found] = session.exec(statement).all()
        assert isinstance(found, int)
        return found

    def updated(self, email_id: int, folder: str, uid: int, **flags: bool) -> dict[str, Any]:
        """The state `email.updated` carries for an email found in one folder."""
        state = {"seen": False, "flagged": False} | flags
        return {
            "id": email_id,
            **state,
            "folders": [{"folder_id": self.folder_id(folder), "uid": uid}],
        }


@pytest.fixture
def first_sync(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> Callable[[], SyncedMailbox]:
    """Register the test user (its mail appended already), sync it, note the events so far."""

    def first() -> SyncedMailbox:
        mailbox = SyncedMailbox(engine, settings, add_mailbox(mail_user))
        mailbox.sync()
        mailbox.events_before = len(change_events(engine, mailbox.mailbox_id))
        return mailbox

    return first


def test_a_flag_change_on_the_server_is_announced_once_with_the_new_flags(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="flag me"), date=RECENT)
    mail_user.append("INBOX", make_message(subject="leave me"), date=RECENT)
    mailbox = first_sync()

    mail_user.add_flags("INBOX", [uid], ["\\Seen", "\\Flagged"])
    mailbox.sync()
    mailbox.sync()

    expected = mailbox.updated(mailbox.email_id("flag me"), "INBOX", uid, seen=True, flagged=True)
    announced = mailbox.announced()
    assert announced == [("email.updated", {"emails": [expected]})], (
        "one email.updated with the new flags, and nothing from the second sync"
    )


def test_a_flag_change_of_an_unannounced_flag_is_not_announced(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="answer me"), date=RECENT)
    mailbox = first_sync()

    mail_user.add_flags("INBOX", [uid], ["\\Answered"])
    mailbox.sync()

    assert mailbox.announced() == [], "email.updated carries seen/flagged"


def test_mail_expunged_from_its_only_folder_is_announced_deleted(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="delete me"), date=RECENT)
    mail_user.append("INBOX", make_message(subject="keep me"), date=RECENT)
    mailbox = first_sync()
    deleted = mailbox.email_id("delete me")

    mail_user.expunge("INBOX", [uid])
    mailbox.sync()
    mailbox.sync()

    assert mailbox.announced() == [("email.deleted", {"email_ids": [deleted]})], (
        "one email.deleted, and nothing from the second sync"
    )


def test_mail_expunged_from_one_of_two_folders_is_announced_updated(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="copied"), date=RECENT)
    [copy_uid] = mail_user.copy("INBOX", [uid], "Sent")
    mailbox = first_sync()

    mail_user.expunge("INBOX", [uid])
    mailbox.sync()

    expected = mailbox.updated(mailbox.email_id("copied"), "Sent", copy_uid)
    assert mailbox.announced() == [("email.updated", {"emails": [expected]})]


def test_a_move_between_enabled_folders_is_one_update_with_the_new_folder(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="move me"), date=RECENT)
    mail_user.append("Sent", make_message(subject="stay"), date=RECENT)
    mailbox = first_sync()
    moved = mailbox.email_id("move me")

    [new_uid] = mail_user.move("INBOX", [uid], "Sent")
    mailbox.sync()
    mailbox.sync()

    expected = mailbox.updated(moved, "Sent", new_uid)
    announced = mailbox.announced()
    assert announced == [("email.updated", {"emails": [expected]})], (
        "a move is neither deleted nor received mail"
    )
    assert mailbox.email_id("move me") == moved


def test_a_copy_into_another_folder_is_announced_updated(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="copy me"), date=RECENT)
    mailbox = first_sync()

    [copy_uid] = mail_user.copy("INBOX", [uid], "Sent")
    mailbox.sync()

    [(event_type, data)] = mailbox.announced()
    assert event_type == "email.updated"
    [state] = data["emails"]
    assert sorted((f["folder_id"], f["uid"]) for f in state["folders"]) == sorted(
        [
            (mailbox.folder_id("INBOX"), uid),
            (mailbox.folder_id("Sent"), copy_uid),
        ]
    )


def test_a_uidvalidity_reset_announces_only_the_reset(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    for n in range(3):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    mailbox = first_sync()

    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 1000)
    mailbox.sync()
    mailbox.sync()

    assert [event_type for event_type, _ in mailbox.announced()] == ["folder.reset"]


def test_a_run_of_the_changed_folder_announces_an_expunge_at_once(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="delete me"), date=RECENT)
    mail_user.append("Sent", make_message(subject="elsewhere"), date=RECENT)
    mailbox = first_sync()
    deleted = mailbox.email_id("delete me")

    mail_user.expunge("INBOX", [uid])
    mailbox.sync("INBOX")
    announced = mailbox.announced()
    mailbox.sync()

    assert announced == [("email.deleted", {"email_ids": [deleted]})], "the watcher's run"
    assert mailbox.announced() == announced, "nothing more at the full run"


def test_a_run_of_the_source_folder_of_a_move_does_not_delete_the_mail(
    mail_user: MailUser, first_sync: Callable[[], SyncedMailbox]
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="move me"), date=RECENT)
    mail_user.append("Sent", make_message(subject="stay"), date=RECENT)
    mailbox = first_sync()
    moved = mailbox.email_id("move me")

    [new_uid] = mail_user.move("INBOX", [uid], "Sent")
    mailbox.sync("INBOX")
    assert mailbox.announced() == [], "Sent grew: the mail may be there"
    mailbox.sync("Sent")

    expected = mailbox.updated(moved, "Sent", new_uid)
    assert mailbox.announced() == [("email.updated", {"emails": [expected]})]
