"""An SMTP server on loopback (aiosmtpd) that keeps what it receives, for the email channel."""

from __future__ import annotations

import email
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.ports import free_port


class Inbox:
    """An aiosmtpd handler that keeps every message with its envelope recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


@contextmanager
def running_inbox(hostname: str = "127.0.0.1") -> Iterator[tuple[Inbox, int]]:
    """Run an SMTP server (no TLS, no login) on a free port of `hostname`; yield it and the port."""
    port = free_port(hostname)
    inbox = Inbox()
    controller = Controller(inbox, hostname=hostname, port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
