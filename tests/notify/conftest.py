"""Fixtures of the notification tests, whose SMTP server and webhook receivers are on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.config import Settings
from tests.support.smtp_inbox import Inbox, running_inbox
from tests.support.webhook_receiver import (
    WebhookReceiver,
    running_receiver,
    subscribe_to_everything,
)


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
        subscribe_to_everything(engine, webhook_settings, hook)
        yield hook


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """Run an SMTP server on a free loopback port; yield what it received and the port."""
    with running_inbox() as running:
        yield running
