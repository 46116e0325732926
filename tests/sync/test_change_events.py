"""Changes to stored mail reach the outbox once: `email.updated` and `email.deleted`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, Event, Folder
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message

RECENT = datetime.now(UTC) - timedelta(days=3)
CHANGE_EVENTS = ("email.received", "email.updated", "email.deleted", "folder.reset")


def sync(engine: Engine, mailbox_id: int, settings: Settings) -> None:
    result = sync_mailbox(engine, mailbox_id, settings)
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


def events_after(engine: Engine, mailbox_id: int, seen: int) -> list[tuple[str, dict[str, Any]]]:
    return change_events(engine, mailbox_id)[seen:]


def email_id(engine: Engine, mailbox_id: int, subject: str) -> int:
    with session_scope(engine) as session:
        [found] = session.exec(
            select(Email.id).where(Email.mailbox_id == mailbox_id, Email.subject == subject)
        ).all()
    assert found is not None
    return found


def folder_id(engine: Engine, mailbox_id: int, full_name: str) -> int:
    with session_scope(engine) as session:
        [found] = session.exec(
            select(Folder.id).where(Folder.mailbox_id == mailbox_id, Folder.full_name == full_name)
        ).all()
    assert found is not None
    return found


def test_a_flag_change_on_the_server_is_announced_once_with_the_new_flags(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="flag me"), date=RECENT)
    mail_user.append("INBOX", make_message(subject="leave me"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    before = len(change_events(engine, mailbox_id))

    mail_user.add_flags("INBOX", [uid], ["\\Seen", "\\Flagged"])
    sync(engine, mailbox_id, settings)
    sync(engine, mailbox_id, settings)

    inbox = folder_id(engine, mailbox_id, "INBOX")
    expected = {
        "id": email_id(engine, mailbox_id, "flag me"),
        "seen": True,
        "flagged": True,
        "folders": [{"folder_id": inbox, "uid": uid}],
    }
    announced = events_after(engine, mailbox_id, before)
    assert announced == [("email.updated", {"emails": [expected]})], (
        "one email.updated with the new flags, and nothing from the second sync"
    )


def test_a_flag_change_of_an_unannounced_flag_is_not_announced(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="answer me"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    before = len(change_events(engine, mailbox_id))

    mail_user.add_flags("INBOX", [uid], ["\\Answered"])
    sync(engine, mailbox_id, settings)

    assert events_after(engine, mailbox_id, before) == [], "email.updated carries seen/flagged"


def test_mail_expunged_from_its_only_folder_is_announced_deleted(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="delete me"), date=RECENT)
    mail_user.append("INBOX", make_message(subject="keep me"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    deleted = email_id(engine, mailbox_id, "delete me")
    before = len(change_events(engine, mailbox_id))

    mail_user.expunge("INBOX", [uid])
    sync(engine, mailbox_id, settings)
    sync(engine, mailbox_id, settings)

    assert events_after(engine, mailbox_id, before) == [
        ("email.deleted", {"email_ids": [deleted]})
    ], "one email.deleted, and nothing from the second sync"


def test_mail_expunged_from_one_of_two_folders_is_announced_updated(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="copied"), date=RECENT)
    [copy_uid] = mail_user.copy("INBOX", [uid], "Sent")
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    before = len(change_events(engine, mailbox_id))

    mail_user.expunge("INBOX", [uid])
    sync(engine, mailbox_id, settings)

    expected = {
        "id": email_id(engine, mailbox_id, "copied"),
        "seen": False,
        "flagged": False,
        "folders": [{"folder_id": folder_id(engine, mailbox_id, "Sent"), "uid": copy_uid}],
    }
    assert events_after(engine, mailbox_id, before) == [("email.updated", {"emails": [expected]})]


def test_a_move_between_enabled_folders_is_one_update_with_the_new_folder(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="move me"), date=RECENT)
    mail_user.append("Sent", make_message(subject="stay"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    moved = email_id(engine, mailbox_id, "move me")
    before = len(change_events(engine, mailbox_id))

    [new_uid] = mail_user.move("INBOX", [uid], "Sent")
    sync(engine, mailbox_id, settings)
    sync(engine, mailbox_id, settings)

    expected = {
        "id": moved,
        "seen": False,
        "flagged": False,
        "folders": [{"folder_id": folder_id(engine, mailbox_id, "Sent"), "uid": new_uid}],
    }
    announced = events_after(engine, mailbox_id, before)
    assert announced == [("email.updated", {"emails": [expected]})], (
        "a move is neither deleted nor received mail"
    )
    assert email_id(engine, mailbox_id, "move me") == moved


def test_a_copy_into_another_folder_is_announced_updated(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="copy me"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    before = len(change_events(engine, mailbox_id))

    [copy_uid] = mail_user.copy("INBOX", [uid], "Sent")
    sync(engine, mailbox_id, settings)

    [(event_type, data)] = events_after(engine, mailbox_id, before)
    assert event_type == "email.updated"
    [state] = data["emails"]
    assert sorted((f["folder_id"], f["uid"]) for f in state["folders"]) == sorted(
        [
            (folder_id(engine, mailbox_id, "INBOX"), uid),
            (folder_id(engine, mailbox_id, "Sent"), copy_uid),
        ]
    )


def test_a_uidvalidity_reset_announces_only_the_reset(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    for n in range(3):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    before = len(change_events(engine, mailbox_id))

    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 1000)
    sync(engine, mailbox_id, settings)
    sync(engine, mailbox_id, settings)

    assert [event_type for event_type, _ in events_after(engine, mailbox_id, before)] == [
        "folder.reset"
    ]


def sync_folders(engine: Engine, mailbox_id: int, settings: Settings, *names: str) -> None:
    """Sync only `names`, as a run the watcher queues for the folders that changed."""
    result = sync_mailbox(engine, mailbox_id, settings, folders=frozenset(names))
    assert result is not None, "the lease was free"
    assert result.complete, "the run finished"


def test_a_run_of_the_changed_folder_announces_an_expunge_at_once(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="delete me"), date=RECENT)
    mail_user.append("Sent", make_message(subject="elsewhere"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    deleted = email_id(engine, mailbox_id, "delete me")
    before = len(change_events(engine, mailbox_id))

    mail_user.expunge("INBOX", [uid])
    sync_folders(engine, mailbox_id, settings, "INBOX")
    announced = events_after(engine, mailbox_id, before)
    sync(engine, mailbox_id, settings)

    assert announced == [("email.deleted", {"email_ids": [deleted]})], "the watcher's run"
    assert events_after(engine, mailbox_id, before) == announced, "nothing more at the full run"


def test_a_run_of_the_source_folder_of_a_move_does_not_delete_the_mail(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="move me"), date=RECENT)
    mail_user.append("Sent", make_message(subject="stay"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    moved = email_id(engine, mailbox_id, "move me")
    before = len(change_events(engine, mailbox_id))

    [new_uid] = mail_user.move("INBOX", [uid], "Sent")
    sync_folders(engine, mailbox_id, settings, "INBOX")
    assert events_after(engine, mailbox_id, before) == [], "Sent grew: the mail may be there"
    sync_folders(engine, mailbox_id, settings, "Sent")

    expected = {
        "id": moved,
        "seen": False,
        "flagged": False,
        "folders": [{"folder_id": folder_id(engine, mailbox_id, "Sent"), "uid": new_uid}],
    }
    assert events_after(engine, mailbox_id, before) == [("email.updated", {"emails": [expected]})]
