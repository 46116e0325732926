"""Fixtures of the notification tests, whose SMTP server and webhook receivers are on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.notify.webhook_endpoints import create_webhook_endpoint
from app.security import SecretBox
from tests.notify.receiver import WebhookReceiver, running_receiver
from tests.secret_watch import SecretKind, register_secret


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Allow the loopback SMTP server (aiosmtpd on 127.0.0.1), as a local relay needs."""
    return settings.model_copy(update={"smtp_allow_private_hosts": True})


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private_hosts": True})


@pytest.fixture
def receiver(engine: Engine, webhook_settings: Settings) -> Iterator[WebhookReceiver]:
    """A receiver registered as the one webhook endpoint, subscribed to every event."""
    with running_receiver() as hook:
        with session_scope(engine) as session:
            _, secret = create_webhook_endpoint(
                session,
                webhook_settings,
                SecretBox.from_settings(webhook_settings),
                url=hook.url,
                event_types=[],
                enabled=True,
            )
        hook.secret = register_secret(SecretKind.WEBHOOK_SECRET, secret, "the receiver's")
        yield hook
