"""The event outbox: every event is written in the transaction that caused it."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlmodel import Session

from app.db.models import Event, Mailbox
from app.db.repositories.emails import email_states


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


def record_email_updates(
    session: Session, mailbox: Mailbox, email_ids: Collection[int], batch_size: int
) -> None:
    """Record `email.updated` with the current state of the emails still in a folder.

    Batches of `batch_size`, like `email.received`. An email in no folder is left out:
    a sync may relink it later in the run (a move), else `email.deleted` announces it.
    """
    if not email_ids:
        return
    session.flush()
    states = [state for state in email_states(session, email_ids) if state["folders"]]
    for start in range(0, len(states), batch_size):
        record_event(
            session, "email.updated", mailbox, {"emails": states[start : start + batch_size]}
        )
