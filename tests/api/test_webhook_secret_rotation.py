"""Rotating a webhook's signing secret: the old one signs beside the new one for a grace
period, then only the new one. A real receiver checks with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from standardwebhooks import Webhook, WebhookVerificationError

from app.config import Settings
from app.db.models import utcnow
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.support.live_api import LiveApi
from tests.support.webhook_receiver import WebhookReceiver, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private_hosts": True})


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as hook:
        yield hook


@pytest.fixture
def endpoint(live_api: LiveApi, receiver: WebhookReceiver) -> dict[str, object]:
    created = live_api.client.post("/v1/webhooks", json={"url": receiver.url})
    assert created.status_code == 201
    endpoint: dict[str, object] = created.json()
    receiver.secret = str(endpoint["secret"])
    return endpoint


def send_test_event(
    live_api: LiveApi, engine: Engine, settings: Settings, webhook_id: object, now: datetime
) -> None:
    assert live_api.client.post(f"/v1/webhooks/{webhook_id}/test").status_code == 202
    asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings), now=now))


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def test_the_old_secret_signs_beside_the_new_one_until_the_grace_period_ends(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    receiver: WebhookReceiver,
    endpoint: dict[str, object],
) -> None:
    old_secret = str(endpoint["secret"])
    before = utcnow()
    rotated = live_api.client.post(
        f"/v1/webhooks/{endpoint['id']}/rotate-secret", json={"grace_seconds": 2}
    )

    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != old_secret
    grace_ends = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert before + timedelta(seconds=2) <= grace_ends <= utcnow() + timedelta(seconds=2)
    assert "secret" not in live_api.client.get(f"/v1/webhooks/{endpoint['id']}").json()

    send_test_event(live_api, engine, settings, endpoint["id"], utcnow())
    headers, body = receiver.requests[-1], receiver.bodies[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2, "one signature per secret"
    assert verifies(old_secret, headers, body), "during the grace the old secret must verify"
    assert verifies(new_secret, headers, body), "the new secret must verify at once"

    # After the grace (the dispatcher is told the time: no sleeping)
    send_test_event(live_api, engine, settings, endpoint["id"], grace_ends + timedelta(seconds=1))
    headers, body = receiver.requests[-1], receiver.bodies[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert verifies(new_secret, headers, body)
    assert not verifies(old_secret, headers, body), "the old secret still signs after the grace"


def test_a_rotation_without_a_body_keeps_the_old_secret_a_day(
    live_api: LiveApi, endpoint: dict[str, object]
) -> None:
    rotated = live_api.client.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret")

    assert rotated.status_code == 200
    grace_ends = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert abs(grace_ends - (utcnow() + timedelta(days=1))) < timedelta(minutes=1)


def test_a_grace_of_zero_drops_the_old_secret_at_once(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    receiver: WebhookReceiver,
    endpoint: dict[str, object],
) -> None:
    old_secret = str(endpoint["secret"])
    rotated = live_api.client.post(
        f"/v1/webhooks/{endpoint['id']}/rotate-secret", json={"grace_seconds": 0}
    )
    assert rotated.json()["previous_secret_expires_at"] is None

    send_test_event(live_api, engine, settings, endpoint["id"], utcnow())

    headers, body = receiver.requests[-1], receiver.bodies[-1]
    assert verifies(rotated.json()["secret"], headers, body)
    assert not verifies(old_secret, headers, body)


@pytest.mark.parametrize("grace_seconds", [-1, 8 * 86400, "1 day", 1.5, "60", True])
def test_a_grace_outside_zero_to_a_week_is_refused_naming_the_field(
    live_api: LiveApi, endpoint: dict[str, object], grace_seconds: object
) -> None:
    answer = live_api.client.post(
        f"/v1/webhooks/{endpoint['id']}/rotate-secret", json={"grace_seconds": grace_seconds}
    )

    assert answer.status_code == 422
    assert [error["field"] for error in answer.json()["errors"]] == ["grace_seconds"]


def test_a_grace_written_as_a_whole_json_number_is_taken(
    live_api: LiveApi, endpoint: dict[str, object]
) -> None:
    """JSON Schema's `integer` includes 60.0; strict types alone refused it."""
    answer = live_api.client.post(
        f"/v1/webhooks/{endpoint['id']}/rotate-secret", json={"grace_seconds": 60.0}
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["previous_secret_expires_at"] is not None


def test_rotating_an_unknown_webhook_is_not_found(live_api: LiveApi) -> None:
    answer = live_api.client.post("/v1/webhooks/999999/rotate-secret")

    assert (answer.status_code, answer.json()["code"]) == (404, "not_found")
