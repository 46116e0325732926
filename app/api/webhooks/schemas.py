"""Webhook endpoint shapes of the API; a signing secret appears once, in the answer that
issued it (`WebhookCreated`, `WebhookSecretRotated`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, Field

from app.api.deps import MAX_ROW_ID
from app.api.request_models import USER_ID_PATTERN, WHOLE_NUMBER, RequestModel, WholeNumber
from app.db.models import DeliveryState, WebhookDelivery, WebhookEndpoint, column_values
from app.notify.envelope import EventType
from app.notify.webhook_endpoints import (
    DEFAULT_SECRET_GRACE,
    KEEP,
    MAX_SECRET_GRACE,
    WebhookEndpointChanges,
)

_URL = "http(s) URL; private and loopback addresses are refused."
_EVENT_TYPES = "Event types to send; an empty list means every type."
_OWNER = (
    "Send only events of mailboxes this CRM user owns; null: any owner. A system mailbox"
    " (no owner) never matches an owner filter."
)
_MAILBOX_ID = "Send only events of this mailbox; null: any mailbox."
MailboxId = Annotated[int, Field(ge=1, le=MAX_ROW_ID), WHOLE_NUMBER]


class WebhookCreate(RequestModel):
    """Body of `POST /v1/webhooks`; an event is sent when every filter that is set matches."""

    url: str = Field(max_length=2048, description=_URL)
    event_types: list[EventType] = Field(default_factory=list, description=_EVENT_TYPES)
    owner: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=USER_ID_PATTERN, description=_OWNER
    )
    mailbox_id: MailboxId | None = Field(default=None, description=_MAILBOX_ID)
    enabled: bool = True


class WebhookUpdate(RequestModel):
    """Body of `PATCH /v1/webhooks/{id}`; fields left out keep their value, and null clears
    the `owner` and `mailbox_id` filters."""

    url: str | None = Field(default=None, max_length=2048, description=_URL)
    event_types: list[EventType] | None = Field(default=None, description=_EVENT_TYPES)
    owner: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=USER_ID_PATTERN, description=_OWNER
    )
    mailbox_id: MailboxId | None = Field(default=None, description=_MAILBOX_ID)
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint and clears its reason."
    )

    def to_changes(self) -> WebhookEndpointChanges:
        given = self.model_fields_set
        return WebhookEndpointChanges(
            url=self.url,
            event_types=list(self.event_types) if self.event_types is not None else None,
            enabled=self.enabled,
            owner=self.owner if "owner" in given else KEEP,
            mailbox_id=self.mailbox_id if "mailbox_id" in given else KEEP,
        )


class WebhookSecretRotation(RequestModel):
    """Body of `POST /v1/webhooks/{id}/rotate-secret` (optional)."""

    grace_seconds: WholeNumber = Field(
        default=int(DEFAULT_SECRET_GRACE.total_seconds()),
        ge=0,
        le=int(MAX_SECRET_GRACE.total_seconds()),
        description=(
            "How long the replaced secret keeps signing beside the new one (default a day,"
            " at most a week); 0 drops it at once."
        ),
    )

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.grace_seconds)


class WebhookRead(BaseModel):
    """A webhook endpoint; never its secret."""

    id: int
    url: str
    event_types: list[str]
    owner: str | None = Field(description="Only this CRM user's mailboxes; null: any owner.")
    mailbox_id: int | None = Field(description="Only this mailbox; null: any mailbox.")
    enabled: bool
    disabled_reason: str | None = Field(description="Why the service disabled the endpoint.")
    failure_count: int = Field(description="Failed attempts since the last success.")
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret replaced by the last rotation still signs; null: none."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookRead:
        """Read the row's columns by name; the owner filter is `owner_user_id` there."""
        return cls.model_validate({**column_values(endpoint, cls), "owner": endpoint.owner_user_id})


class WebhookCreated(WebhookRead):
    """The new endpoint with its signing secret: store it now, it is never shown again."""

    secret: str = Field(description="`whsec_...` Standard Webhooks signing secret.")


class WebhookSecretRotated(WebhookCreated):
    """The endpoint with its new signing secret: store it now, it is never shown again."""


class WebhookDeliveryRead(BaseModel):
    """One attempt to deliver an event to the endpoint."""

    id: int
    event_id: int | None = Field(description="null once the event left the outbox.")
    webhook_id: str = Field(description="The `webhook-id` header, the same on every retry.")
    event_type: str
    attempt: int = Field(description="1 for the first try.")
    state: DeliveryState = Field(
        description="`succeeded`; `pending`: retried at next_attempt_at; `failed`: given up."
    )
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    latency_ms: int | None
    error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookDeliveryRead:
        """Read every field from the row's column of the same name."""
        return cls.model_validate(delivery, from_attributes=True)


class WebhookTestQueued(BaseModel):
    """The test event queued for the endpoint; its attempts appear in the delivery log."""

    event_id: int
