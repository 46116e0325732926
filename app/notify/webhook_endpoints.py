"""Webhook endpoints as the API manages them: secret made once, URL vetted, test events.

Secret rotation gives the receiver time to switch without a lost delivery:

    rotate(grace) --> new secret (shown once) signs; the replaced one signs too
                      (one `webhook-signature` header, two `v1,` entries) until
                      now + grace --> only the new one
    rotate again inside the grace: the oldest secret is dropped at once
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlmodel import Session

from app.config import Settings
from app.db.models import Event, WebhookEndpoint, persisted_id, utcnow
from app.db.repositories.event_deliveries import add_deliveries
from app.db.repositories.webhooks import (
    add_webhook_endpoint,
    delete_webhook_endpoint,
    get_webhook_endpoint,
)
from app.notify.channels import webhook_channel
from app.notify.envelope import WEBHOOK_TEST_EVENT
from app.notify.errors import WebhookEndpointNotFoundError
from app.notify.webhooks import check_webhook_url, generate_secret
from app.security import SecretBox

DEFAULT_SECRET_GRACE = timedelta(days=1)
MAX_SECRET_GRACE = timedelta(days=7)


class Keep(Enum):
    """Marks a filter a PATCH leaves as it is (unlike None, which clears it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class WebhookEndpointChanges:
    """Fields a PATCH sets; None leaves url, event_types and enabled as they are."""

    url: str | None = None
    event_types: list[str] | None = None
    enabled: bool | None = None
    owner: str | Keep | None = KEEP
    mailbox_id: int | Keep | None = KEEP


def create_webhook_endpoint(
    session: Session,
    settings: Settings,
    secrets: SecretBox,
    *,
    url: str,
    event_types: list[str],
    enabled: bool,
    owner: str | None = None,
    mailbox_id: int | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; return it with its signing secret, which is never shown again."""
    check_webhook_url(url, allow_private=settings.webhook_allow_private_hosts)
    secret = generate_secret()
    endpoint = add_webhook_endpoint(
        session,
        WebhookEndpoint(
            url=url,
            event_types=event_types,
            enabled=enabled,
            owner_user_id=owner,
            mailbox_id=mailbox_id,
            secret_enc=secrets.encrypt(secret),
        ),
    )
    return endpoint, secret


def rotate_webhook_secret(
    session: Session, secrets: SecretBox, endpoint_id: int, *, grace: timedelta
) -> tuple[WebhookEndpoint, str]:
    """Issue a new signing secret, shown once; the replaced one keeps signing for `grace`."""
    endpoint = get_webhook_endpoint_or_raise(session, endpoint_id)
    secret = generate_secret()
    now = utcnow()
    if grace > timedelta(0):
        endpoint.previous_secret_enc = endpoint.secret_enc
        endpoint.previous_secret_expires_at = now + grace
    else:
        endpoint.previous_secret_enc = endpoint.previous_secret_expires_at = None
    endpoint.secret_enc = secrets.encrypt(secret)
    endpoint.updated_at = now
    session.flush()
    return endpoint, secret


def signing_secrets(endpoint: WebhookEndpoint, secrets: SecretBox, now: datetime) -> list[str]:
    """Return the secrets a delivery at `now` is signed with: the current one, and the
    replaced one while its grace period lasts."""
    current = [secrets.decrypt(endpoint.secret_enc)]
    expires_at = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_enc is None or expires_at is None or expires_at <= now:
        return current
    return [*current, secrets.decrypt(endpoint.previous_secret_enc)]


def get_webhook_endpoint_or_raise(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = get_webhook_endpoint(session, endpoint_id)
    if endpoint is None:
        raise WebhookEndpointNotFoundError(f"webhook {endpoint_id} does not exist")
    return endpoint


def update_webhook_endpoint(
    session: Session, settings: Settings, endpoint_id: int, changes: WebhookEndpointChanges
) -> WebhookEndpoint:
    """Apply a PATCH; enabling an endpoint again forgets why and how often it failed."""
    endpoint = get_webhook_endpoint_or_raise(session, endpoint_id)
    if changes.url is not None:
        check_webhook_url(changes.url, allow_private=settings.webhook_allow_private_hosts)
        endpoint.url = changes.url
    if changes.event_types is not None:
        endpoint.event_types = changes.event_types
    if changes.enabled is not None:
        if changes.enabled and not endpoint.enabled:
            endpoint.disabled_reason = None
            endpoint.failure_count = 0
        endpoint.enabled = changes.enabled
    if changes.owner is not KEEP:
        endpoint.owner_user_id = changes.owner
    if changes.mailbox_id is not KEEP:
        endpoint.mailbox_id = changes.mailbox_id
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def remove_webhook_endpoint(session: Session, endpoint_id: int) -> None:
    delete_webhook_endpoint(session, get_webhook_endpoint_or_raise(session, endpoint_id))


def record_test_event(session: Session, endpoint_id: int) -> Event:
    """Put a `webhook.test` event in the outbox, addressed to this one endpoint only."""
    endpoint = get_webhook_endpoint_or_raise(session, endpoint_id)
    event = Event(
        type=WEBHOOK_TEST_EVENT,
        data={"endpoint_id": endpoint_id, "url": endpoint.url},
        dispatched_at=utcnow(),  # its only channel is made here, not by the fan-out
    )
    session.add(event)
    session.flush()
    add_deliveries(session, persisted_id(event), [webhook_channel(endpoint_id)])
    return event
