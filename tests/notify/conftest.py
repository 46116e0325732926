"""Fixtures of the notification tests, whose SMTP server and webhook receivers are on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from app.config import Settings
from tests.notify.receiver import WebhookReceiver, running_receiver, subscribe_to_everything
from tests.notify.test_email import Inbox


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Allow the loopback SMTP server (aiosmtpd on 127.0.0.1), as a local relay needs."""
    return settings.model_copy(update={"smtp_allow_private_hosts": True})


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """Run aiosmtpd on a free loopback port; yield what it received and the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private_hosts": True})


@pytest.fixture
def receiver(engine: Engine, webhook_settings: Settings) -> Iterator[WebhookReceiver]:
    """A receiver registered as the one webhook endpoint, subscribed to every event."""
    with running_receiver() as hook:
        subscribe_to_everything(engine, webhook_settings, hook)
        yield hook
