"""The event outbox: every event is written in the transaction that caused it, and
read in id order by SSE streams (`GET /v1/events`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import Event, Mailbox, NotificationRecipient
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


# Events of a system mailbox that its notification recipients hear about.
RECIPIENT_EVENT_TYPES = (
    "mailbox.credentials_invalid",
    "mailbox.credentials_restored",
    "mailbox.connection_failing",
    "mailbox.connection_restored",
)


def event_ids_after(
    session: Session, after_id: int, *, also_ids: Collection[int] = (), limit: int
) -> list[int]:
    """Return the committed event ids above `after_id`, and those of `also_ids`, ascending."""
    position = col(Event.id) > after_id
    if also_ids:
        position = sa.or_(position, col(Event.id).in_(list(also_ids)))
    statement = sa.select(col(Event.id)).where(position).order_by(col(Event.id)).limit(limit)
    return [int(event_id) for event_id in session.execute(statement).scalars()]


def matching_events(
    session: Session,
    ids: Collection[int],
    *,
    user_id: str | None = None,
    types: Collection[str] = (),
    exclude_types: Collection[str] = (),
) -> list[Event]:
    """Return the events of `ids` a stream's filters keep, oldest first.

    `user_id` keeps the user's own mailboxes' events, plus the credential events
    of system mailboxes when the user is a notification recipient.
    """
    statement = select(Event).where(col(Event.id).in_(list(ids)))
    if user_id is not None:
        is_recipient = sa.exists().where(col(NotificationRecipient.user_id) == user_id)
        statement = statement.where(
            sa.or_(
                col(Event.owner_user_id) == user_id,
                sa.and_(
                    col(Event.owner_user_id).is_(None),
                    col(Event.mailbox_id).is_not(None),
                    col(Event.type).in_(RECIPIENT_EVENT_TYPES),
                    is_recipient,
                ),
            )
        )
    if types:
        statement = statement.where(col(Event.type).in_(list(types)))
    if exclude_types:
        statement = statement.where(col(Event.type).not_in(list(exclude_types)))
    return list(session.exec(statement.order_by(col(Event.id))))


def newest_event_id(session: Session) -> int:
    """Return the highest event id so far (0 for an empty outbox)."""
    newest = session.execute(sa.select(sa.func.max(col(Event.id)))).scalar()
    return int(newest) if newest is not None else 0
