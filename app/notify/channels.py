"""Which channels an event goes to, and how a channel is named in `event_delivery`.

    every event .................. each enabled webhook endpoint whose filter matches
    mailbox.credentials_invalid .. + `notification` and, with SMTP_URL set, mail:
    mailbox.connection_failing       owned mailbox: `email` (the owner's address)
                                     system mailbox: `email:<user id>` per recipient
    mailbox.credentials_restored . + `notification` (clears the pending ones
    mailbox.connection_restored      of its failure)

An endpoint's filter matches when every part of it that is set matches:
`event_types` holds the type (empty: any type), `owner_user_id` equals the
event's `owner`, `mailbox_id` equals the event's `mailbox_id`. A system
mailbox's events have no owner, so an owner-filtered endpoint never gets them:
they belong to no team, and an endpoint that wants them filters by mailbox or
not at all. An event whose mailbox was deleted before fan-out keeps its owner
but no longer matches a mailbox filter.

SSE is not a channel here: streams read the outbox itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.db.models import Event, NotificationRecipient, WebhookEndpoint
from app.notify.envelope import (
    CONNECTION_FAILING,
    CONNECTION_RESTORED,
    CREDENTIALS_INVALID,
    CREDENTIALS_RESTORED,
)

NOTIFICATION_CHANNEL = "notification"
EMAIL_CHANNEL = "email"
_WEBHOOK_PREFIX = "webhook:"
_RECIPIENT_EMAIL_PREFIX = "email:"

# The notices a person is told of (login notification and mail), by their kind;
# a recovery event clears the pending notifications of the kind it ends.
NOTICE_KINDS = {
    CREDENTIALS_INVALID: "credentials_invalid",
    CONNECTION_FAILING: "connection_failing",
}
RECOVERY_ENDS = {
    CREDENTIALS_RESTORED: "credentials_invalid",
    CONNECTION_RESTORED: "connection_failing",
}


def webhook_channel(endpoint_id: int) -> str:
    return f"{_WEBHOOK_PREFIX}{endpoint_id}"


def recipient_email_channel(user_id: str) -> str:
    return f"{_RECIPIENT_EMAIL_PREFIX}{user_id}"


def webhook_endpoint_of(channel: str) -> int | None:
    """Return the endpoint id of a webhook channel, None for other channels."""
    if not channel.startswith(_WEBHOOK_PREFIX):
        return None
    return int(channel.removeprefix(_WEBHOOK_PREFIX))


def is_email_channel(channel: str) -> bool:
    return channel == EMAIL_CHANNEL or channel.startswith(_RECIPIENT_EMAIL_PREFIX)


def email_recipient_of(channel: str) -> str | None:
    """Return the recipient user id of `email:<user id>`; None means the mailbox owner."""
    if channel == EMAIL_CHANNEL:
        return None
    return channel.removeprefix(_RECIPIENT_EMAIL_PREFIX)


def endpoint_wants(endpoint: WebhookEndpoint, event: Event) -> bool:
    """Say whether the event passes the endpoint's filter (see the module docstring)."""
    return (
        (not endpoint.event_types or event.type in endpoint.event_types)
        and (endpoint.owner_user_id is None or endpoint.owner_user_id == event.owner_user_id)
        and (endpoint.mailbox_id is None or endpoint.mailbox_id == event.mailbox_id)
    )


def channels_for(
    event: Event,
    endpoints: Sequence[WebhookEndpoint],
    recipients: Sequence[NotificationRecipient],
    *,
    email_enabled: bool,
) -> list[str]:
    """Return every channel the event must reach (see the module docstring)."""
    channels = [
        webhook_channel(endpoint.id)
        for endpoint in endpoints
        if endpoint.id is not None and endpoint.enabled and endpoint_wants(endpoint, event)
    ]
    if event.mailbox_id is None or (
        event.type not in NOTICE_KINDS and event.type not in RECOVERY_ENDS
    ):
        return channels
    channels.append(NOTIFICATION_CHANNEL)
    if event.type in NOTICE_KINDS and email_enabled:
        if event.owner_user_id is not None:
            channels.append(EMAIL_CHANNEL)
        else:
            channels.extend(recipient_email_channel(r.user_id) for r in recipients if r.email)
    return channels
