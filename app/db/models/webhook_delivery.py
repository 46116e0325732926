"""One attempt to deliver an event to a webhook endpoint: the delivery log.

`webhook_id` is the Standard Webhooks `webhook-id` header, the same on every
retry of one message. `event_id` goes NULL when the event outlives its
retention; the log row stays.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, enum_type, utcnow
from app.db.models.event_delivery import DeliveryState


class WebhookDeliveryBase(Model):
    webhook_id: str = Field(max_length=64)
    event_type: str = Field(max_length=64)
    attempt: int = 1
    state: DeliveryState = Field(default=DeliveryState.PENDING, sa_type=enum_type(DeliveryState))
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = Field(default=None, sa_type=sa.Text)
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None


class WebhookDelivery(WebhookDeliveryBase, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (sa.Index("ix_webhook_delivery_endpoint_id_id", "endpoint_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="webhook_endpoint.id", ondelete="CASCADE")
    event_id: int | None = Field(
        default=None, foreign_key="event.id", ondelete="SET NULL", index=True
    )
    created_at: datetime = Field(default_factory=utcnow)
