"""Read back what a sync stored, to compare it with the server."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import col, func, select

from app.db import session_scope
from app.db.models import (
    Email,
    EmailFolder,
    Event,
    Folder,
    SyncRun,
    SyncTrigger,
)
from app.notify.envelope import Event as PublishedEvent
from app.notify.envelope import EventEnvelope
from tests.support.imap_account import ImapAccount


def stored_uids(engine: Engine, mailbox_id: int) -> dict[str, set[int]]:
    """Map each folder holding synced mail to the UIDs stored for it."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Folder.full_name, EmailFolder.uid)
            .join(EmailFolder, col(EmailFolder.folder_id) == Folder.id)
            .where(Folder.mailbox_id == mailbox_id)
        ).all()
    stored: dict[str, set[int]] = {}
    for folder, uid in rows:
        stored.setdefault(folder, set()).add(uid)
    return stored


def stored_subjects(engine: Engine, mailbox_id: int, folder: str) -> dict[int, str | None]:
    with session_scope(engine) as session:
        rows = session.exec(
            select(EmailFolder.uid, Email.subject)
            .join(Email, col(Email.id) == EmailFolder.email_id)
            .join(Folder, col(Folder.id) == EmailFolder.folder_id)
            .where(Folder.mailbox_id == mailbox_id, Folder.full_name == folder)
        ).all()
    return dict(rows)


def email_count(engine: Engine, mailbox_id: int) -> int:
    with session_scope(engine) as session:
        return len(session.exec(select(Email.id).where(Email.mailbox_id == mailbox_id)).all())


def folder_row(engine: Engine, mailbox_id: int, full_name: str) -> Folder | None:
    with session_scope(engine) as session:
        return session.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.full_name == full_name)
        ).first()


def assert_in_contract(event: Event) -> None:
    """Fail unless the event, as every channel sends it, is the `Event` the OpenAPI
    document publishes (strict JSON types, no undocumented field)."""
    sent = EventEnvelope.of(event).model_dump_json()
    try:
        PublishedEvent.model_validate_json(sent, strict=True)
    except ValidationError as exc:
        raise AssertionError(f"{event.type} breaks the published contract: {sent}\n{exc}") from exc


def events_of(engine: Engine, mailbox_id: int, event_type: str) -> list[dict[str, Any]]:
    """Return the data of the mailbox's events of one type, each checked against the contract."""
    with session_scope(engine) as session:
        events = session.exec(
            select(Event)
            .where(Event.mailbox_id == mailbox_id, Event.type == event_type)
            .order_by(col(Event.id))
        ).all()
        for event in events:
            assert_in_contract(event)
        return [dict(event.data) for event in events]


def server_uids(user: ImapAccount, folders: list[str]) -> dict[str, set[int]]:
    """The server's side of the comparison, for the folders that hold mail."""
    uids = {folder: set(user.uids(folder)) for folder in folders}
    return {folder: found for folder, found in uids.items() if found}


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


def received_in(engine: Engine, mailbox_id: int, folder: str) -> int:
    """Count the messages `email.received` events announced in `folder`."""
    events = events_of(engine, mailbox_id, "email.received")
    return sum(len(event["email_ids"]) for event in events if event["folder"] == folder)


def run_triggers(engine: Engine, mailbox_id: int) -> list[SyncTrigger]:
    with session_scope(engine) as session:
        runs = session.exec(
            select(SyncRun).where(SyncRun.mailbox_id == mailbox_id).order_by(col(SyncRun.id))
        ).all()
        return [run.trigger for run in runs]


def sync_runs(engine: Engine, mailbox_id: int) -> list[SyncRun]:
    with session_scope(engine) as session:
        statement = select(SyncRun).where(SyncRun.mailbox_id == mailbox_id)
        return list(session.exec(statement.order_by(col(SyncRun.id))))
