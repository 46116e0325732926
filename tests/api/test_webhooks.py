"""Webhook endpoints over HTTP: secret shown once, SSRF refusal, test event, delivery log."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.live_api import LiveApi
from tests.notify.receiver import running_receiver


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared settings; parametrize indirectly with True to allow loopback webhook URLs."""
    allow_private = bool(getattr(request, "param", False))
    return settings.model_copy(update={"webhook_allow_private_hosts": allow_private})


def test_a_loopback_url_is_refused_naming_the_url_field(live_api: LiveApi) -> None:
    answer = live_api.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})

    assert answer.status_code == 422
    problem = answer.json()
    assert problem["code"] == "webhook_url_refused"
    assert [error["field"] for error in problem["errors"]] == ["url"]


def test_unknown_event_types_are_refused(live_api: LiveApi) -> None:
    answer = live_api.client.post(
        "/v1/webhooks", json={"url": "https://hooks.example/x", "event_types": ["mail.nope"]}
    )

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"].startswith("event_types")


@pytest.mark.parametrize("settings", [True], indirect=True)
def test_webhook_lifecycle_with_a_signed_test_event(
    live_api: LiveApi, engine: Engine, settings: Settings
) -> None:
    client = live_api.client
    with running_receiver() as receiver:
        created = client.post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": ["mailbox.synced"]}
        )
        assert created.status_code == 201
        endpoint = created.json()
        assert endpoint["secret"].startswith("whsec_")
        receiver.secret = endpoint["secret"]
        read = client.get(f"/v1/webhooks/{endpoint['id']}").json()
        assert "secret" not in read
        assert read["event_types"] == ["mailbox.synced"]
        assert "secret" not in client.get("/v1/webhooks").json()["items"][0]

        queued = client.post(f"/v1/webhooks/{endpoint['id']}/test")
        assert queued.status_code == 202
        asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))

        (payload,) = receiver.accepted.values()
        assert payload["type"] == "webhook.test"
        assert payload["id"] == queued.json()["event_id"]
        log = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()
        (attempt,) = log["items"]
        assert attempt["status_code"] == 204
        assert attempt["state"] == "succeeded"
        assert attempt["attempt"] == 1
        assert attempt["latency_ms"] >= 0
        assert attempt["webhook_id"] == next(iter(receiver.accepted))

    disabled = client.patch(f"/v1/webhooks/{endpoint['id']}", json={"enabled": False})
    assert disabled.json()["enabled"] is False
    assert client.delete(f"/v1/webhooks/{endpoint['id']}").status_code == 204
    missing = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
