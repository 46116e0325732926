"""Peers that answer badly cannot stop the dispatcher: every attempt is recorded.

A hostile `Retry-After`, an answer that drips or never ends, an endpoint whose
secret no configured key opens, and an SMTP server that drips its greeting each
affect their own delivery only.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import DeliveryState, EventDelivery, WebhookEndpoint, utcnow
from app.db.repositories.events import record_event
from app.notify.channels import EMAIL_CHANNEL, webhook_channel
from app.notify.dispatcher import DispatchReport, dispatch_due
from app.notify.retry import MAX_RETRY_AFTER
from app.security import SecretBox
from tests.support.factories import create_mailbox
from tests.support.hostile_receiver import Behaviour, HostileReceiver, hostile_receiver
from tests.support.outbox import attempts_logged, delivery_state, dispatch, record_synced_event
from tests.support.secret_watch import SecretKind, register_secret
from tests.support.webhook_receiver import WebhookReceiver, register_endpoint

# A dispatcher pass that takes longer than this is held by a receiver.
PASS_DEADLINE_SECONDS = 30


def dispatch_within_deadline(engine: Engine, settings: Settings) -> DispatchReport:
    """Run one pass in a thread; a pass a peer holds fails the test instead of hanging it
    (the peer stops at teardown, which frees the thread)."""
    secrets = SecretBox.from_settings(settings)
    outcome: list[DispatchReport | BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(dispatch_due(engine, settings, secrets)))
        except BaseException as exc:  # handed to the test below
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PASS_DEADLINE_SECONDS)
    assert outcome, f"a peer held the dispatcher pass for more than {PASS_DEADLINE_SECONDS} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@pytest.mark.parametrize(
    ("retry_after", "wait_at_least", "wait_at_most"),
    [
        ("99999999999999999999", MAX_RETRY_AFTER, MAX_RETRY_AFTER),  # OverflowError before
        ("9" * 5000, MAX_RETRY_AFTER, MAX_RETRY_AFTER),  # int() refuses 4,300+ digits
        ("²", timedelta(seconds=4), timedelta(seconds=6)),  # isdigit() yes, int() no
        # Arabic-Indic digits in UTF-8 (the receiver writes header strings as latin-1)
        ("١٢٠".encode().decode("latin-1"), timedelta(seconds=4), timedelta(seconds=6)),
        ("-5", timedelta(seconds=4), timedelta(seconds=6)),
        ("1e9", timedelta(seconds=4), timedelta(seconds=6)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER, MAX_RETRY_AFTER),
        ("Fri, 31 Dec 99999 23:59:59 GMT", timedelta(seconds=4), timedelta(seconds=6)),
        ("Mon, 01 Jan 1990 00:00:00 GMT", timedelta(seconds=4), timedelta(seconds=6)),
    ],
)
def test_a_hostile_retry_after_is_bounded_and_the_attempt_recorded(
    *,
    engine: Engine,
    webhook_settings: Settings,
    receiver: WebhookReceiver,
    retry_after: str,
    wait_at_least: timedelta,
    wait_at_most: timedelta,
) -> None:
    receiver.script = [(503, {"Retry-After": retry_after})]
    event_id = record_synced_event(engine)
    now = utcnow()

    dispatch(engine, webhook_settings, now)

    (attempt,) = attempts_logged(engine)
    assert (attempt.status_code, attempt.state) == (503, DeliveryState.PENDING)
    retry_at = delivery_state(engine, event_id).next_attempt_at
    assert retry_at is not None, "the delivery was not scheduled again"
    assert wait_at_least <= retry_at - now <= wait_at_most, (
        f"Retry-After {retry_after[:30]!r} made the dispatcher wait {retry_at - now}"
    )
    dispatch(engine, webhook_settings, now + MAX_RETRY_AFTER + timedelta(seconds=1))
    assert len(receiver.accepted) == 1, "the retry did not deliver the event"


@pytest.fixture
def impatient_settings(webhook_settings: Settings) -> Settings:
    return webhook_settings.model_copy(update={"webhook_timeout_seconds": 1.0})


@pytest.fixture
def dripping(engine: Engine, impatient_settings: Settings) -> Iterator[HostileReceiver]:
    with hostile_receiver(Behaviour.DRIP) as hostile:
        register_endpoint(engine, impatient_settings, hostile.url)
        yield hostile


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(
    engine: Engine, impatient_settings: Settings, dripping: HostileReceiver
) -> None:
    event_id = record_synced_event(engine)

    started = time.monotonic()
    report = dispatch_within_deadline(engine, impatient_settings)
    seconds = time.monotonic() - started

    assert dripping.requests == 1
    assert report.retrying == 1
    assert seconds < 10, f"a byte every 0.1 s held the dispatcher {seconds:.1f} s (deadline 1 s)"
    (attempt,) = attempts_logged(engine)
    assert (attempt.state, attempt.error) == (DeliveryState.PENDING, "timed out")
    assert delivery_state(engine, event_id).state is DeliveryState.PENDING


@pytest.fixture
def endless(engine: Engine, webhook_settings: Settings) -> Iterator[HostileReceiver]:
    with hostile_receiver(Behaviour.ENDLESS_BODY) as hostile:
        register_endpoint(engine, webhook_settings, hostile.url)
        yield hostile


def test_a_huge_answer_body_is_not_read_whole(
    engine: Engine, webhook_settings: Settings, endless: HostileReceiver
) -> None:
    event_id = record_synced_event(engine)

    report = dispatch_within_deadline(engine, webhook_settings)

    assert report.delivered == 1
    assert delivery_state(engine, event_id).state is DeliveryState.SUCCEEDED
    deadline = time.monotonic() + 10
    while endless.body_sent_whole is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert endless.body_sent_whole is False, "the dispatcher read a 64 MiB answer body whole"


def test_an_endpoint_whose_secret_cannot_be_opened_does_not_stop_the_others(
    engine: Engine, webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    """A secret stored under a key no longer in SECRET_KEYS fails its own delivery only."""
    dropped_key = register_secret(SecretKind.FERNET_KEY, Fernet.generate_key().decode(), "dropped")
    dropped = webhook_settings.model_copy(update={"secret_keys": [SecretStr(dropped_key)]})
    orphan_id, _ = register_endpoint(
        engine, webhook_settings, receiver.url, SecretBox.from_settings(dropped)
    )
    event_id = record_synced_event(engine)

    report = dispatch_within_deadline(engine, webhook_settings)

    assert len(receiver.accepted) == 1, "the endpoint with a readable secret got nothing"
    assert receiver.bad_signatures == 0
    assert (report.delivered, report.retrying) == (1, 1)
    with session_scope(engine) as session:
        orphan = session.exec(
            select(EventDelivery)
            .where(EventDelivery.event_id == event_id)
            .where(EventDelivery.channel == webhook_channel(orphan_id))
        ).one()
        endpoints = list(session.exec(select(WebhookEndpoint).order_by(col(WebhookEndpoint.id))))
    assert orphan.state is DeliveryState.PENDING
    assert orphan.last_error == "internal error: SecretDecryptionError"
    assert all(endpoint.enabled for endpoint in endpoints)


@pytest.fixture
def dripping_smtp() -> Iterator[HostileReceiver]:
    with hostile_receiver(Behaviour.SMTP_DRIP) as hostile:
        yield hostile


def test_an_smtp_server_that_drips_its_greeting_is_cut_off_at_the_deadline(
    engine: Engine, settings: Settings, dripping_smtp: HostileReceiver
) -> None:
    """smtplib's timeout is per read: a byte every 0.1 s never trips it, the deadline does."""
    smtp_settings = settings.model_copy(
        update={
            "smtp_url": SecretStr(dripping_smtp.url),
            "smtp_allow_private_hosts": True,
            "smtp_timeout_seconds": 1.0,
        }
    )
    with session_scope(engine) as session:
        mailbox = create_mailbox(session, owner_email="owner@crm.test")
        event = record_event(session, "mailbox.credentials_invalid", mailbox, {"error_code": "x"})
        session.flush()
        event_id = event.id

    started = time.monotonic()
    dispatch_within_deadline(engine, smtp_settings)
    seconds = time.monotonic() - started

    assert dripping_smtp.requests == 1
    assert seconds < 10, f"a greeting byte every 0.1 s held the dispatcher {seconds:.1f} s"
    with session_scope(engine) as session:
        mail = session.exec(
            select(EventDelivery)
            .where(EventDelivery.event_id == event_id)
            .where(EventDelivery.channel == EMAIL_CHANNEL)
        ).one()
    assert mail.state is DeliveryState.PENDING
    assert mail.last_error is not None
    assert mail.last_error.startswith("SMTP failed")
