"""Webhook endpoints over HTTP: secret shown once, SSRF refusal, test event, delivery log."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.repositories.events import record_event
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.support.factories import create_mailbox, id_of
from tests.support.live_api import LiveApi
from tests.support.webhook_receiver import WebhookReceiver, running_receiver


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


def _subscribe(live_api: LiveApi, receiver: WebhookReceiver, **filters: Any) -> dict[str, Any]:
    created = live_api.client.post("/v1/webhooks", json={"url": receiver.url, **filters})
    assert created.status_code == 201, created.text
    endpoint: dict[str, Any] = created.json()
    receiver.secret = endpoint["secret"]
    return endpoint


def _received(receiver: WebhookReceiver) -> list[tuple[str, int | None, str | None]]:
    """Return (type, mailbox_id, owner) of every event the receiver accepted, in event order."""
    payloads = sorted(receiver.accepted.values(), key=lambda payload: payload["id"])
    return [(p["type"], p["mailbox_id"], p["owner"]) for p in payloads]


@pytest.mark.parametrize("settings", [True], indirect=True)
def test_owner_and_mailbox_filters_route_each_event_to_its_endpoints(
    live_api: LiveApi, engine: Engine, settings: Settings
) -> None:
    with session_scope(engine) as session:
        alice_mail = create_mailbox(session, owner_user_id="alice")
        alice_sales = create_mailbox(session, owner_user_id="alice")
        bob_mail = create_mailbox(session, owner_user_id="bob")
        system = create_mailbox(session, owner_user_id=None)
        mailboxes = [alice_mail, alice_sales, bob_mail, system]
        for mailbox in mailboxes:
            record_event(session, "mailbox.synced", mailbox, {"new": 1})
        alice_id, sales_id, bob_id, system_id = (id_of(m) for m in mailboxes)
    with ExitStack() as stack:
        alice, bob, sales, alice_sales_only, everything = (
            stack.enter_context(running_receiver()) for _ in range(5)
        )
        alice_endpoint = _subscribe(live_api, alice, owner="alice")
        _subscribe(live_api, bob, owner="bob")
        _subscribe(live_api, sales, mailbox_id=sales_id)
        _subscribe(live_api, alice_sales_only, owner="alice", mailbox_id=sales_id)
        _subscribe(live_api, everything)
        asyncio.run(dispatch_due(engine, settings, SecretBox.from_settings(settings)))

        synced = "mailbox.synced"
        assert _received(alice) == [(synced, alice_id, "alice"), (synced, sales_id, "alice")], (
            "the owner filter lets through exactly alice's mailboxes"
        )
        assert _received(bob) == [(synced, bob_id, "bob")]
        assert _received(sales) == [(synced, sales_id, "alice")]
        assert _received(alice_sales_only) == [(synced, sales_id, "alice")]
        assert _received(everything) == [
            (synced, alice_id, "alice"),
            (synced, sales_id, "alice"),
            (synced, bob_id, "bob"),
            (synced, system_id, None),
        ], "an endpoint without filters gets every event, the system mailbox's too"
        assert alice_endpoint["owner"] == "alice"
        assert alice_endpoint["mailbox_id"] is None


@pytest.mark.parametrize("settings", [True], indirect=True)
def test_filters_are_set_shown_and_cleared_by_patch(live_api: LiveApi) -> None:
    client = live_api.client
    created = client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "owner": "alice", "mailbox_id": 7},
    ).json()
    url = f"/v1/webhooks/{created['id']}"
    assert (created["owner"], created["mailbox_id"]) == ("alice", 7)

    kept = client.patch(url, json={"owner": "bob"}).json()
    assert (kept["owner"], kept["mailbox_id"]) == ("bob", 7), "a filter left out is kept"
    cleared = client.patch(url, json={"mailbox_id": None}).json()
    assert (cleared["owner"], cleared["mailbox_id"]) == ("bob", None), "null clears a filter"
    read = client.get(url).json()
    assert (read["owner"], read["mailbox_id"]) == ("bob", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mailbox_id": "7"}, "mailbox_id"),
        ({"mailbox_id": 0}, "mailbox_id"),
        ({"owner": ""}, "owner"),
        ({"owner": "alice\x00"}, "owner"),
    ],
)
@pytest.mark.parametrize("settings", [True], indirect=True)
def test_a_bad_filter_is_refused_naming_its_field(
    live_api: LiveApi, body: dict[str, Any], field: str
) -> None:
    answer = live_api.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", **body})

    assert answer.status_code == 422
    assert [error["field"] for error in answer.json()["errors"]] == [field]
