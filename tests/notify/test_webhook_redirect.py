"""A webhook receiver answering 302 cannot send the delivery on to another address.

The Location points at a second real server on loopback that records every
request, or at the cloud metadata address; private hosts are even allowed for
webhooks here, so only the refusal to follow redirects keeps the target unreached.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db.models import DeliveryState, utcnow
from tests.support.outbox import (
    LATER,
    attempts_logged,
    delivery_state,
    dispatch,
    record_synced_event,
)
from tests.support.ssrf import RecordingServer, connect_only_here, recording_server
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def bystander() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


@pytest.mark.parametrize("target", ["bystander", "metadata"])
def test_a_redirect_is_not_followed_and_the_delivery_fails_saying_so(
    *,
    engine: Engine,
    webhook_settings: Settings,
    receiver: WebhookReceiver,
    bystander: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    location = {
        "bystander": f"{bystander.url}/internal/admin",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    }[target]
    receiver.script = [(302, {"location": location})]
    elsewhere = connect_only_here(monkeypatch)
    event_id = record_synced_event(engine)

    now = utcnow()
    for _ in range(3):  # later passes would retry a delivery that is not final
        dispatch(engine, webhook_settings, now)
        now += LATER

    assert len(receiver.requests) == 1
    assert bystander.hits == []
    assert elsewhere == []
    (attempt,) = attempts_logged(engine)
    assert (attempt.status_code, attempt.state) == (302, DeliveryState.FAILED)
    assert attempt.error == "HTTP 302: redirects are not followed"
    delivery = delivery_state(engine, event_id)
    assert (delivery.state, delivery.attempts) == (DeliveryState.FAILED, 1)
    assert delivery.last_error == "HTTP 302: redirects are not followed"
