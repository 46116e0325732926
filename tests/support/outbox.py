"""Record events in the outbox, dispatch them, and read back how each delivery went."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import (
    EventDelivery,
    MailboxStatus,
    WebhookDelivery,
)
from app.db.repositories.event_deliveries import get_delivery
from app.db.repositories.events import record_event
from app.notify.channels import EMAIL_CHANNEL
from app.notify.dispatcher import DispatchReport, dispatch_due
from app.security import SecretBox
from tests.support.factories import create_mailbox

LATER = timedelta(hours=13)  # beyond the longest retry delay, jitter included


def dispatch(engine: Engine, settings: Settings, now: datetime) -> DispatchReport:
    return asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings), now=now))


def record_synced_event(engine: Engine) -> int:
    with session_scope(engine) as session:
        event = record_event(session, "mailbox.synced", create_mailbox(session), {"new": 3})
        session.flush()
        assert event.id is not None
        return event.id


def attempts_logged(engine: Engine) -> list[WebhookDelivery]:
    with session_scope(engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))))


def delivery_state(engine: Engine, event_id: int) -> EventDelivery:
    with session_scope(engine) as session:
        deliveries = list(
            session.exec(select(EventDelivery).where(EventDelivery.event_id == event_id))
        )
    assert len(deliveries) == 1
    return deliveries[0]


def mail_a_credential_failure(engine: Engine, settings: Settings) -> int:
    """Record a credentials_invalid event for an owned mailbox, run one pass; return its id."""
    with session_scope(engine) as session:
        mailbox = create_mailbox(
            session,
            owner_user_id="alice",
            owner_email="owner@crm.test",
            email_address="sales@corp.test",
            status=MailboxStatus.AUTH_FAILED,
        )
        data = {"error_code": "auth_failed", "message": "[AUTHENTICATIONFAILED] bad password"}
        event = record_event(session, "mailbox.credentials_invalid", mailbox, data)
        session.flush()
        assert event.id is not None
        event_id = event.id
    asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))
    return event_id


def email_delivery(engine: Engine, event_id: int) -> EventDelivery:
    with session_scope(engine) as session:
        delivery = get_delivery(session, event_id, EMAIL_CHANNEL)
        assert delivery is not None
        session.expunge(delivery)
        return delivery
