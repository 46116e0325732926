"""The outbox: every event is written in the transaction that caused it.

Channels then deliver it (`event_delivery`, made by the dispatcher, which then
sets `dispatched_at`), and SSE clients resume by `id`.
On SQLite the table is AUTOINCREMENT, so an id is never handed out twice even
after the newest row is deleted; PostgreSQL sequences never reuse one either.
A sequence value is taken at INSERT but becomes visible at COMMIT, so
concurrent writers can commit ids out of order: a reader resuming "after id N"
must allow for late arrivals just below its high mark.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from app.correlation import MAX_LENGTH, current_correlation_id
from app.db.models.base import Model, utcnow


class EventBase(Model):
    type: str = Field(max_length=64, description="e.g. email.received, mailbox.synced")
    mailbox_id: int | None = Field(
        default=None, foreign_key="mailbox.id", ondelete="SET NULL", index=True
    )
    owner_user_id: str | None = Field(default=None, max_length=255)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)


class Event(EventBase, table=True):
    __table_args__ = (
        sa.Index("ix_event_owner_user_id_id", "owner_user_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # Set when the dispatcher made the event's `event_delivery` rows (its channels).
    dispatched_at: datetime | None = Field(default=None, index=True)
    # The request or job that caused the event: the id its log lines carry (app.correlation).
    # Not part of the envelope: CRMs get the event, operators trace it.
    correlation_id: str | None = Field(
        default_factory=current_correlation_id, max_length=MAX_LENGTH
    )
