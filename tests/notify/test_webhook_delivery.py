"""Webhook delivery through the dispatcher to a real receiver: retries, backoff, idempotency."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import DeliveryState, WebhookEndpoint, utcnow
from tests.support.outbox import (
    LATER,
    attempts_logged,
    delivery_state,
    dispatch,
    record_synced_event,
)
from tests.support.webhook_receiver import WebhookReceiver


def test_a_failing_receiver_gets_the_event_once_after_retries(
    engine: Engine, webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.script = [(500, {})] * 3
    event_id = record_synced_event(engine)

    now = utcnow()
    for _ in range(6):  # more passes than needed: a delivered event is never sent again
        dispatch(engine, webhook_settings, now)
        now += LATER

    assert len(receiver.requests) == 4
    assert len({headers["webhook-id"] for headers in receiver.requests}) == 1
    assert list(receiver.accepted) == [receiver.requests[0]["webhook-id"]]
    (payload,) = receiver.accepted.values()
    assert payload["id"] == event_id
    assert payload["type"] == "mailbox.synced"
    assert payload["data"] == {"new": 3}
    assert receiver.bad_signatures == 0
    log = attempts_logged(engine)
    assert [(a.attempt, a.status_code, a.state) for a in log] == [
        (1, 500, DeliveryState.PENDING),
        (2, 500, DeliveryState.PENDING),
        (3, 500, DeliveryState.PENDING),
        (4, 204, DeliveryState.SUCCEEDED),
    ]
    delivery = delivery_state(engine, event_id)
    assert (delivery.state, delivery.attempts) == (DeliveryState.SUCCEEDED, 4)


def test_retries_wait_with_growing_delays(
    engine: Engine, webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.script = [(503, {})] * 2
    record_synced_event(engine)
    now = utcnow()

    dispatch(engine, webhook_settings, now)
    dispatch(engine, webhook_settings, now + timedelta(seconds=3))  # the first wait is ~5 s
    assert len(receiver.requests) == 1
    dispatch(engine, webhook_settings, now + timedelta(seconds=7))
    assert len(receiver.requests) == 2
    dispatch(engine, webhook_settings, now + timedelta(minutes=3))  # the second is ~5 min
    assert len(receiver.requests) == 2
    dispatch(engine, webhook_settings, now + timedelta(minutes=7))
    assert len(receiver.requests) == 3
    assert len(receiver.accepted) == 1


def test_a_client_error_is_not_retried(
    engine: Engine, webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.script = [(400, {})]
    event_id = record_synced_event(engine)

    now = utcnow()
    for _ in range(3):
        dispatch(engine, webhook_settings, now)
        now += LATER

    assert len(receiver.requests) == 1
    assert receiver.accepted == {}
    delivery = delivery_state(engine, event_id)
    assert (delivery.state, delivery.last_error) == (DeliveryState.FAILED, "HTTP 400")


def test_too_many_requests_waits_as_long_as_retry_after_says(
    engine: Engine, webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.script = [(429, {"Retry-After": "120"})]
    event_id = record_synced_event(engine)
    now = utcnow()

    dispatch(engine, webhook_settings, now)
    retry_at = delivery_state(engine, event_id).next_attempt_at
    assert retry_at is not None
    assert timedelta(seconds=120) <= retry_at - now < timedelta(seconds=121)
    dispatch(engine, webhook_settings, now + timedelta(seconds=60))
    assert len(receiver.requests) == 1
    dispatch(engine, webhook_settings, now + timedelta(seconds=121))
    assert len(receiver.requests) == 2
    assert len(receiver.accepted) == 1


def test_an_endpoint_failing_for_a_day_is_disabled_with_a_reason(
    engine: Engine, webhook_settings: Settings, receiver: WebhookReceiver
) -> None:
    receiver.script = [(500, {})] * 100
    event_id = record_synced_event(engine)

    now = utcnow()
    for _ in range(10):
        dispatch(engine, webhook_settings, now)
        now += LATER

    assert len(receiver.requests) == 8  # the first try and seven retries over about a day
    assert delivery_state(engine, event_id).state is DeliveryState.FAILED
    with session_scope(engine) as session:
        (endpoint,) = session.exec(select(WebhookEndpoint))
    assert endpoint.enabled is False
    assert endpoint.disabled_reason is not None
    assert "HTTP 500" in endpoint.disabled_reason
    record_synced_event(engine)
    dispatch(engine, webhook_settings, now)
    assert len(receiver.requests) == 8  # a disabled endpoint gets nothing
