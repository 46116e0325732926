"""Reading the outbox in id order, for SSE streams (`GET /v1/events`)."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import Event, NotificationRecipient

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
