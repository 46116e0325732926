"""Credential-failure mail through a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import email
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import MailboxStatus, NotificationRecipient
from app.db.repositories.events import record_event
from app.db.repositories.notifications import replace_notification_recipients
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.factories import create_mailbox


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


def send_failure(engine: Engine, settings: Settings, owner: str | None) -> None:
    with session_scope(engine) as session:
        mailbox = create_mailbox(
            session,
            owner_user_id=owner,
            owner_email="owner@crm.test" if owner else None,
            email_address="sales@corp.test",
            status=MailboxStatus.AUTH_FAILED,
        )
        data = {"error_code": "auth_failed", "message": "[AUTHENTICATIONFAILED] bad password"}
        record_event(session, "mailbox.credentials_invalid", mailbox, data)
    for _ in range(2):  # a second pass sends nothing more
        asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))


def test_the_owner_gets_one_mail_saying_what_failed_and_what_to_do(
    engine: Engine, settings: Settings, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    smtp_settings = settings.model_copy(
        update={"smtp_url": SecretStr(f"smtp://127.0.0.1:{port}"), "smtp_from": "bridge@crm.test"}
    )
    send_failure(engine, smtp_settings, "alice")

    ((recipients, message),) = handler.messages
    assert recipients == ["owner@crm.test"]
    assert message["From"] == "bridge@crm.test"
    assert "sales@corp.test" in message["Subject"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "bad password" in text.get_content()
    assert "password in the CRM" in text.get_content()
    assert "sales@corp.test" in html.get_content()


def test_a_system_mailbox_mails_each_recipient_once(
    engine: Engine, settings: Settings, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    smtp_settings = settings.model_copy(update={"smtp_url": SecretStr(f"smtp://127.0.0.1:{port}")})
    with session_scope(engine) as session:
        replace_notification_recipients(
            session,
            [
                NotificationRecipient(user_id="admin-1", email="a1@crm.test"),
                NotificationRecipient(user_id="admin-2", email="a2@crm.test"),
                NotificationRecipient(user_id="admin-3"),  # no address: nothing to mail
            ],
        )
    send_failure(engine, smtp_settings, None)

    assert sorted(recipients for recipients, _ in handler.messages) == [
        ["a1@crm.test"],
        ["a2@crm.test"],
    ]
