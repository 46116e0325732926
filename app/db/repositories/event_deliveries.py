"""Queries on `event_delivery`: fanning events out to channels and claiming due deliveries.

A delivery is claimed by a conditional UPDATE that bumps `attempts` and moves
`next_attempt_at` to the end of a lease: two dispatchers never send one
delivery at once, and a dispatcher that dies mid-send leaves a delivery that
is due again when its lease ends. Results are written only by the claimant
(`attempts` unchanged since its claim), so a late writer cannot undo a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from app.db.models import DeliveryState, Event, EventDelivery
from app.db.repositories.results import rows_changed


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """One delivery this dispatcher now owns until its lease ends; `attempt` counts from 1."""

    event_id: int
    channel: str
    attempt: int


def undispatched_events(session: Session, limit: int) -> list[Event]:
    """Return the oldest events whose channels were not worked out yet."""
    statement = select(Event).where(col(Event.dispatched_at).is_(None)).order_by(col(Event.id))
    return list(session.exec(statement.limit(limit)))


def mark_dispatched(session: Session, event_id: int, now: datetime) -> bool:
    """Claim an event's fan-out; False when another dispatcher did it first."""
    result = session.execute(
        sa.update(Event)
        .where(col(Event.id) == event_id, col(Event.dispatched_at).is_(None))
        .values(dispatched_at=now)
    )
    return rows_changed(result) == 1


def add_deliveries(session: Session, event_id: int, channels: list[str]) -> None:
    """Queue the event on each channel, due at once."""
    for channel in channels:
        session.add(EventDelivery(event_id=event_id, channel=channel))
    session.flush()


def claim_due_deliveries(
    session: Session, now: datetime, lease_until: datetime, limit: int
) -> list[ClaimedDelivery]:
    """Claim up to `limit` pending deliveries that are due, oldest events first."""
    due = session.execute(
        sa.select(
            col(EventDelivery.event_id), col(EventDelivery.channel), col(EventDelivery.attempts)
        )
        .where(
            col(EventDelivery.state) == DeliveryState.PENDING,
            sa.or_(
                col(EventDelivery.next_attempt_at).is_(None),
                col(EventDelivery.next_attempt_at) <= now,
            ),
        )
        .order_by(col(EventDelivery.event_id), col(EventDelivery.channel))
        .limit(limit)
    ).all()
    claimed: list[ClaimedDelivery] = []
    for event_id, channel, attempts in due:
        result = session.execute(
            sa.update(EventDelivery)
            .where(*_owned(event_id, channel, attempts))
            .values(attempts=attempts + 1, next_attempt_at=lease_until)
        )
        if rows_changed(result) == 1:
            claimed.append(ClaimedDelivery(event_id, channel, attempts + 1))
    return claimed


def finish_delivery(
    session: Session,
    delivery: ClaimedDelivery,
    state: DeliveryState,
    *,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
) -> bool:
    """Record the claimant's outcome; False when the claim was lost (its lease ran out)."""
    result = session.execute(
        sa.update(EventDelivery)
        .where(*_owned(delivery.event_id, delivery.channel, delivery.attempt))
        .values(state=state, next_attempt_at=next_attempt_at, last_error=error)
    )
    return rows_changed(result) == 1


def get_delivery(session: Session, event_id: int, channel: str) -> EventDelivery | None:
    return session.get(EventDelivery, (event_id, channel))


def delete_expired_events(session: Session, before: datetime) -> int:
    """Drop events older than `before` that no channel still has to deliver."""
    still_pending = sa.exists().where(
        col(EventDelivery.event_id) == col(Event.id),
        col(EventDelivery.state) == DeliveryState.PENDING,
    )
    result = session.execute(
        sa.delete(Event).where(
            col(Event.created_at) < before,
            col(Event.dispatched_at).is_not(None),
            ~still_pending,
        )
    )
    return rows_changed(result)


def _owned(event_id: int, channel: str, attempts: int) -> list[sa.ColumnElement[bool]]:
    return [
        col(EventDelivery.event_id) == event_id,
        col(EventDelivery.channel) == channel,
        col(EventDelivery.state) == DeliveryState.PENDING,
        col(EventDelivery.attempts) == attempts,
    ]
