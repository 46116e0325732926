"""Delivery state of one event on one channel.

Channels: `webhook:<endpoint id>`, `notification`, `email` (the owner) and
`email:<user id>` (one per notification recipient of a system mailbox).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, enum_type


class DeliveryState(StrEnum):
    """`pending` is retried at `next_attempt_at`; `failed` means the channel gave up."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class EventDelivery(Model, table=True):
    __tablename__ = "event_delivery"
    __table_args__ = (
        sa.Index("ix_event_delivery_state_next_attempt_at", "state", "next_attempt_at"),
    )

    event_id: int = Field(foreign_key="event.id", ondelete="CASCADE", primary_key=True)
    channel: str = Field(max_length=300, primary_key=True)
    state: DeliveryState = Field(default=DeliveryState.PENDING, sa_type=enum_type(DeliveryState))
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=sa.Text)
