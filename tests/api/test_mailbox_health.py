"""Mailbox and fleet health over real HTTP: states the queue, the API and other workers cause.

A real uvicorn, the machine's Redis (a queue of this test's own, no worker
draining it) and real Dovecot mailboxes, on SQLite and PostgreSQL. The
states a sync run causes by itself are in tests/sync/test_health.py.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import ApiKeyScope, utcnow
from app.db.repositories.api_keys import create_api_key
from app.db.repositories.mailboxes import lease_mailbox
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.secret_watch import SecretKind, register_secret

BEHIND_AFTER_SECONDS = 0.5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"health_behind_after_seconds": BEHIND_AFTER_SECONDS})


@pytest.fixture
def status_key(engine: Engine) -> str:
    with session_scope(engine) as session:
        _row, key = create_api_key(session, "status page", ApiKeyScope.STATUS)
    return register_secret(SecretKind.API_KEY, key, "the status key")


def synced(engine: Engine, settings: Settings, user: MailUser, add_mailbox: MailboxFactory) -> int:
    user.append("INBOX", make_message())
    mailbox_id = add_mailbox(user)
    assert sync_mailbox(engine, mailbox_id, settings) is not None
    return mailbox_id


def wait_out_the_grace() -> None:
    time.sleep(BEHIND_AFTER_SECONDS * 2)


def health(live_api: LiveApi, mailbox_id: int) -> dict[str, object]:
    response = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/health")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def blocker_codes(body: dict[str, object]) -> list[str]:
    blockers = body["blockers"]
    assert isinstance(blockers, list)
    return [blocker["code"] for blocker in blockers]


def test_a_status_key_opens_the_health_routes_and_nothing_else(
    *,
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    status_key: str,
) -> None:
    mailbox_id = synced(engine, settings, mail_user, add_mailbox)
    headers = {"Authorization": f"Bearer {status_key}"}
    client = live_api.client

    one = client.get(f"/v1/mailboxes/{mailbox_id}/health", headers=headers)
    fleet = client.get("/v1/health/mailboxes", headers=headers)
    refused = [
        client.get("/v1/mailboxes", headers=headers),
        client.get(f"/v1/mailboxes/{mailbox_id}/emails", headers=headers),
        client.post(f"/v1/mailboxes/{mailbox_id}/sync", headers=headers),
        client.delete(f"/v1/mailboxes/{mailbox_id}", headers=headers),
        client.get("/v1/webhooks", headers=headers),
    ]

    assert (one.status_code, one.json()["state"]) == (200, "healthy")
    assert fleet.status_code == 200
    for response in refused:
        assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope"), (
            response.request.url
        )
    assert client.get(f"/v1/mailboxes/{mailbox_id}").status_code == 200, "not deleted"
    assert client.get("/v1/health/mailboxes").status_code == 200, "a full key opens them too"
    no_key = httpx.get(f"{live_api.base_url}/v1/health/mailboxes")
    assert no_key.status_code == 401


def test_a_missing_mailbox_has_no_health(live_api: LiveApi) -> None:
    response = live_api.client.get("/v1/mailboxes/4242/health")

    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_a_sync_waiting_in_the_queue_past_the_grace_is_behind_a_backlog(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = synced(engine, settings, mail_user, add_mailbox)
    queued = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")
    assert queued.status_code == 202, queued.text
    wait_out_the_grace()

    body = health(live_api, mailbox_id)

    assert body["state"] == "behind", body["summary"]
    assert blocker_codes(body) == ["queue_backlog"]
    assert "1 job is waiting in the queue" in str(body["summary"])
    fleet = live_api.client.get("/v1/health/mailboxes").json()
    assert fleet["queue_depth"] == 1
    assert fleet["counts"]["behind"] == 1


def test_a_due_mailbox_nobody_picks_up_is_behind(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)  # registered, never synced: due at once
    wait_out_the_grace()

    body = health(live_api, mailbox_id)

    assert body["state"] == "behind", body["summary"]
    assert blocker_codes(body) == ["not_picked_up"]
    assert "is a worker running?" in str(body["summary"])
    assert body["last_success_at"] is None


def test_a_mailbox_another_worker_holds_is_behind_that_lease(
    live_api: LiveApi, engine: Engine, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    with session_scope(engine) as session:  # as a worker on another machine takes it
        taken = lease_mailbox(
            session, mailbox_id, "elsewhere.example:4242", utcnow(), timedelta(seconds=60)
        )
        assert taken is not None
    wait_out_the_grace()

    body = health(live_api, mailbox_id)

    assert body["state"] == "behind", body["summary"]
    assert blocker_codes(body) == ["lease_held_elsewhere"]
    assert "elsewhere.example:4242 holds the mailbox until" in str(body["summary"])


def test_a_disabled_mailbox_is_disabled_and_unwatched(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = synced(engine, settings, mail_user, add_mailbox)
    patched = live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json={"status": "disabled"})
    assert patched.status_code == 200, patched.text

    body = health(live_api, mailbox_id)

    assert body["state"] == "disabled"
    assert body["summary"] == "Disabled: it is not synced until it is enabled again."
    assert body["next_attempt_at"] is None
    assert body["watch"] == {"state": "off", "since": None}


def test_the_fleet_counts_states_lists_the_worst_lags_and_failures(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    healthy = synced(engine, settings, mail_user, add_mailbox)
    second = mail_user.dovecot.add_user()
    never = add_mailbox(second)  # behind once the grace is out
    third = mail_user.dovecot.add_user()
    failing = add_mailbox(third, port=third.dovecot.plain_port)  # TLS to the plain port
    assert sync_mailbox(engine, failing, settings) is not None
    wait_out_the_grace()

    response = live_api.client.get("/v1/health/mailboxes")
    scrape = live_api.client.get("/metrics").text

    assert response.status_code == 200
    fleet = response.json()
    assert fleet["counts"] == {
        "healthy": 1,
        "syncing": 0,
        "backfilling": 0,
        "behind": 1,
        "retrying": 0,
        "auth_failed": 0,
        "failing": 1,
        "disabled": 0,
    }
    worst = [(entry["mailbox_id"], entry["state"]) for entry in fleet["worst_lags"]]
    # Lag runs from the last sync, or from registration for those that never synced.
    assert worst == [(healthy, "healthy"), (never, "behind"), (failing, "failing")]
    lags = [entry["lag_seconds"] for entry in fleet["worst_lags"]]
    assert lags == sorted(lags, reverse=True)
    assert [(f["mailbox_id"], f["error_code"]) for f in fleet["recent_failures"]] == [
        (failing, "tls_error")
    ]
    assert fleet["queue_depth"] == 0
    assert 'imap_bridge_mailbox_health{state="behind"} 1.0' in scrape
    assert 'imap_bridge_mailbox_health{state="failing"} 1.0' in scrape
    assert 'imap_bridge_mailbox_health{state="healthy"} 1.0' in scrape
    assert "imap_bridge_mailbox_lag_seconds_max" in scrape
