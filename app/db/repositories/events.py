"""The event outbox: every event is written in the transaction that caused it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.db.models import Event, Mailbox


def record_event(
    session: Session, event_type: str, mailbox: Mailbox | None, data: dict[str, Any]
) -> Event:
    """Add one event to the outbox (delivered to every channel after commit)."""
    event = Event(
        type=event_type,
        mailbox_id=mailbox.id if mailbox else None,
        owner_user_id=mailbox.owner_user_id if mailbox else None,
        data=data,
    )
    session.add(event)
    return event
