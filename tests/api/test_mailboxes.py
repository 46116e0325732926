"""`/v1/mailboxes` over HTTP against the real Dovecot: register, list, read, change, delete."""

from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from arq.constants import job_key_prefix
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import (
    Attachment,
    Email,
    EmailFolder,
    Event,
    Folder,
    Mailbox,
    MailboxStatus,
    SyncRun,
)
from app.db.repositories.folders import mailbox_folders
from app.job_queue import sync_job_id
from app.security import SecretBox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory, create_email, create_folder, id_of, link_email
from tests.support.fault_proxy import FaultProxy
from tests.support.live_api import LiveApi, running_api
from tests.support.redis_queue import redis_url_through

REDIS_DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once


def create_body(user: MailUser, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email_address": f"{user.name}@Example.COM",
        "owner": {"user_id": "crm-user-1", "email": "owner@example.com"},
        "imap": {
            "host": user.dovecot.host,
            "port": user.dovecot.tls_port,
            "security": "ssl",
            "username": user.name,
        },
        "auth": {"type": "password", "password": user.password},
        "sync_start": "2024-01-01",
    }
    return body | overrides


def no_secret(response: httpx.Response, *secrets: str) -> httpx.Response:
    """Return the response after checking that it repeats none of the credentials."""
    for secret in secrets:
        assert secret not in response.text
    return response


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    code: str = response.json()["code"]
    return code


def stored(engine: Engine, mailbox_id: int) -> Mailbox | None:
    with session_scope(engine) as session:
        return session.get(Mailbox, mailbox_id)


def test_create_verifies_stores_and_discovers_folders(
    live_api: LiveApi, mail_user: MailUser, engine: Engine, settings: Settings
) -> None:
    response = no_secret(
        live_api.client.post("/v1/mailboxes", json=create_body(mail_user)), mail_user.password
    )

    assert response.status_code == 201, response.text
    created = response.json()
    assert created == {
        "id": created["id"],
        "email_address": f"{mail_user.name}@example.com",
        "owner": {"user_id": "crm-user-1", "email": "owner@example.com"},
        "imap": {
            "host": "127.0.0.1",
            "port": mail_user.dovecot.tls_port,
            "security": "ssl",
            "username": mail_user.name,
            "tls_verify": True,
        },
        "auth": {"type": "password", "provider": None},
        "status": "active",
        "last_error": None,
        "last_synced_at": None,
        "next_sync_at": None,
        "sync_start": "2024-01-01",
        "watch": True,
        "created_at": created["created_at"],
    }
    read = no_secret(live_api.client.get(f"/v1/mailboxes/{created['id']}"), mail_user.password)
    assert read.json() == created
    with session_scope(engine) as session:
        folders = {f.full_name: f for f in mailbox_folders(session, created["id"])}
        mailbox = session.get(Mailbox, created["id"])
        assert mailbox is not None
        assert mailbox.password_enc is not None
        assert mail_user.password not in mailbox.password_enc
        assert SecretBox.from_settings(settings).decrypt(mailbox.password_enc) == mail_user.password
    assert {name for name, folder in folders.items() if folder.sync_enabled} == {"INBOX", "Sent"}
    assert {"Drafts", "Trash", "Junk", "Archive"} <= set(folders)


def test_create_with_a_refused_login_saves_nothing(live_api: LiveApi, mail_user: MailUser) -> None:
    body = create_body(mail_user, auth={"type": "password", "password": "wrong-pw-51x"})

    response = no_secret(live_api.client.post("/v1/mailboxes", json=body), "wrong-pw-51x")

    assert response.status_code == 422
    assert problem_code(response) == "auth_failed"
    assert response.json()["errors"][0]["field"] == "auth"
    assert live_api.client.get("/v1/mailboxes").json()["items"] == []


def test_an_address_is_registered_once_per_owner(live_api: LiveApi, mail_user: MailUser) -> None:
    client = live_api.client
    first = create_body(mail_user)
    assert client.post("/v1/mailboxes", json=first).status_code == 201

    again = create_body(mail_user, email_address=f"{mail_user.name.upper()}@example.com")
    duplicate = no_secret(client.post("/v1/mailboxes", json=again), mail_user.password)
    assert duplicate.status_code == 409
    assert problem_code(duplicate) == "mailbox_exists"

    other_owner = create_body(mail_user, owner={"user_id": "crm-user-2"})
    assert client.post("/v1/mailboxes", json=other_owner).status_code == 201

    system = create_body(mail_user, owner=None)
    assert client.post("/v1/mailboxes", json=system).status_code == 201
    second_system = client.post("/v1/mailboxes", json=system)
    assert second_system.status_code == 409
    assert problem_code(second_system) == "mailbox_exists"


def test_concurrent_registrations_of_one_address_give_one_mailbox(
    live_api: LiveApi, mail_user: MailUser
) -> None:
    body = create_body(mail_user)

    def register() -> httpx.Response:
        """Post once, and once more if the server dropped the session, as a client would.

        Dovecot 2.3 sometimes kills one of several sessions of an account that
        read their folders' status at the same moment ("Panic: fcntl(...list.index.log)
        ... Resource deadlock avoided"); the service answers that 502 connection_lost.
        """
        response = live_api.client.post("/v1/mailboxes", json=body)
        if response.status_code == 502 and problem_code(response) == "connection_lost":
            response = live_api.client.post("/v1/mailboxes", json=body)
        return response

    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(lambda _: register(), "abc"))

    assert sorted(response.status_code for response in responses) == [201, 409, 409]
    assert {problem_code(r) for r in responses if r.status_code == 409} == {"mailbox_exists"}
    assert len(live_api.client.get("/v1/mailboxes").json()["items"]) == 1


def test_invalid_input_names_each_field(live_api: LiveApi, mail_user: MailUser) -> None:
    body = create_body(
        mail_user,
        email_address="not-an-address",
        imap={"host": "127.0.0.1", "port": 0, "security": "tls", "username": mail_user.name},
        auth={"type": "password"},
    )

    response = live_api.client.post("/v1/mailboxes", json=body)

    assert response.status_code == 422
    assert problem_code(response) == "validation_error"
    assert {error["field"] for error in response.json()["errors"]} == {
        "email_address",
        "imap.port",
        "imap.security",
        "auth.password",
    }


def test_list_pages_through_every_mailbox_once(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    ids = [add_mailbox(mail_user, email_address=f"box{n}@example.com") for n in range(5)]

    seen: list[int] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = no_secret(live_api.client.get("/v1/mailboxes", params=params), mail_user.password)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break

    assert seen == ids
    assert pages == 3
    bad = live_api.client.get("/v1/mailboxes", params={"cursor": "WyJ4Il0"})  # ["x"]
    assert bad.status_code == 422
    assert [error["field"] for error in bad.json()["errors"]] == ["cursor"]


def test_list_filters_by_owner_and_status(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    ann = add_mailbox(mail_user, email_address="a@example.com", owner_user_id="ann")
    ann_failed = add_mailbox(
        mail_user,
        email_address="b@example.com",
        owner_user_id="ann",
        status=MailboxStatus.AUTH_FAILED,
    )
    bob = add_mailbox(mail_user, email_address="c@example.com", owner_user_id="bob")

    def listed(**params: str) -> list[int]:
        response = live_api.client.get("/v1/mailboxes", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert listed(owner="ann") == [ann, ann_failed]
    assert listed(owner="bob") == [bob]
    assert listed(status="auth_failed") == [ann_failed]
    assert listed(owner="bob", status="auth_failed") == []
    assert live_api.client.get("/v1/mailboxes", params={"status": "gone"}).status_code == 422


def test_wrong_new_password_is_refused_and_changes_nothing(
    live_api: LiveApi,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    engine: Engine,
    settings: Settings,
) -> None:
    mailbox_id = add_mailbox(mail_user, status=MailboxStatus.AUTH_FAILED, last_error="auth_failed")
    before = live_api.client.get(f"/v1/mailboxes/{mailbox_id}").json()

    patch = {"auth": {"type": "password", "password": "still-wrong-77q"}}
    response = no_secret(
        live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json=patch), "still-wrong-77q"
    )

    assert response.status_code == 422
    assert problem_code(response) == "auth_failed"
    assert live_api.client.get(f"/v1/mailboxes/{mailbox_id}").json() == before
    mailbox = stored(engine, mailbox_id)
    assert mailbox is not None and mailbox.password_enc is not None
    assert SecretBox.from_settings(settings).decrypt(mailbox.password_enc) == mail_user.password


def test_working_new_password_reactivates_an_auth_failed_mailbox(
    live_api: LiveApi,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    engine: Engine,
    settings: Settings,
) -> None:
    secrets = SecretBox.from_settings(settings)
    mailbox_id = add_mailbox(
        mail_user,
        status=MailboxStatus.AUTH_FAILED,
        last_error="auth_failed: the server refused the credentials",
        consecutive_failures=3,
        password_enc=secrets.encrypt("the-old-password"),
    )

    patch = {"auth": {"type": "password", "password": mail_user.password}}
    response = no_secret(
        live_api.client.patch(f"/v1/mailboxes/{mailbox_id}", json=patch), mail_user.password
    )

    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["status"] == "active"
    assert changed["last_error"] is None
    assert changed["next_sync_at"] is not None  # due now
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None and mailbox.password_enc is not None
        assert secrets.decrypt(mailbox.password_enc) == mail_user.password
        assert mailbox.consecutive_failures == 0
        events = session.exec(select(Event.type).where(Event.mailbox_id == mailbox_id)).all()
    assert events == ["mailbox.credentials_restored"]


def test_new_imap_settings_must_log_in_before_they_are_saved(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    url = f"/v1/mailboxes/{mailbox_id}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    imap = {"host": "127.0.0.1", "port": closed_port, "security": "ssl", "username": mail_user.name}
    auth = {"type": "password", "password": mail_user.password}

    refused = live_api.client.patch(url, json={"imap": imap, "auth": auth})
    assert no_secret(refused, mail_user.password).status_code == 502
    assert problem_code(refused) == "unreachable"
    assert live_api.client.get(url).json()["imap"]["port"] == mail_user.dovecot.tls_port

    starttls = imap | {"port": mail_user.dovecot.plain_port, "security": "starttls"}
    changed = live_api.client.patch(url, json={"imap": starttls, "auth": auth})
    no_secret(changed, mail_user.password)
    assert changed.status_code == 200, changed.text
    assert changed.json()["imap"] == starttls | {"tls_verify": True}


def test_owner_sync_start_and_status_change_without_a_login(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    url = f"/v1/mailboxes/{mailbox_id}"
    client = live_api.client

    moved = client.patch(url, json={"owner": {"user_id": "crm-user-9"}, "sync_start": "2023-05-01"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["owner"] == {"user_id": "crm-user-9", "email": None}
    assert moved.json()["sync_start"] == "2023-05-01"

    disabled = client.patch(url, json={"status": "disabled"})
    assert disabled.json()["status"] == "disabled"
    assert disabled.json()["owner"] == {"user_id": "crm-user-9", "email": None}  # kept
    resumed = client.patch(url, json={"status": "active", "owner": None, "sync_start": None})
    assert resumed.json()["status"] == "active"
    assert resumed.json()["next_sync_at"] is not None
    assert (resumed.json()["owner"], resumed.json()["sync_start"]) == (None, None)
    assert client.patch(url, json={"status": "auth_failed"}).status_code == 422


def test_watching_is_turned_off_and_on_per_mailbox(
    live_api: LiveApi, mail_user: MailUser, engine: Engine
) -> None:
    created = live_api.client.post("/v1/mailboxes", json=create_body(mail_user, watch=False))
    assert created.status_code == 201, created.text
    assert created.json()["watch"] is False
    url = f"/v1/mailboxes/{created.json()['id']}"

    turned_on = live_api.client.patch(url, json={"watch": True})
    assert turned_on.json()["watch"] is True
    kept = live_api.client.patch(url, json={"sync_start": None})
    assert kept.json()["watch"] is True, "a PATCH without `watch` changed it"
    mailbox = stored(engine, created.json()["id"])
    assert mailbox is not None and mailbox.watch
    assert live_api.client.patch(url, json={"watch": "sometimes"}).status_code == 422


def test_moving_a_mailbox_onto_a_taken_address_is_a_conflict(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    add_mailbox(mail_user, email_address="shared@example.com", owner_user_id="ann")
    bobs = add_mailbox(mail_user, email_address="shared@example.com", owner_user_id="bob")

    response = live_api.client.patch(f"/v1/mailboxes/{bobs}", json={"owner": {"user_id": "ann"}})

    assert response.status_code == 409
    assert problem_code(response) == "mailbox_exists"
    assert live_api.client.get(f"/v1/mailboxes/{bobs}").json()["owner"]["user_id"] == "bob"


def test_delete_removes_the_mailbox_with_its_local_mail_only(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory, engine: Engine
) -> None:
    mailbox_id = add_mailbox(mail_user)
    kept_id = add_mailbox(mail_user, email_address="kept@example.com")
    for owner_id in (mailbox_id, kept_id):
        with session_scope(engine) as session:
            mailbox = session.get(Mailbox, owner_id)
            assert mailbox is not None
            folder = create_folder(session, mailbox)
            email = create_email(session, mailbox)
            link_email(session, email, folder, uid=1)
            session.add(Attachment(email_id=id_of(email), n=0, part_id="2"))
            session.add(SyncRun(mailbox_id=owner_id))

    response = live_api.client.delete(f"/v1/mailboxes/{mailbox_id}")

    assert response.status_code == 204
    assert response.content == b""
    for method in ("GET", "PATCH", "DELETE"):
        gone = live_api.client.request(method, f"/v1/mailboxes/{mailbox_id}", json={})
        assert gone.status_code == 404
        assert problem_code(gone) == "not_found"
    with session_scope(engine) as session:
        assert session.exec(select(Folder.mailbox_id)).all() == [kept_id]
        assert session.exec(select(Email.mailbox_id)).all() == [kept_id]
        assert session.exec(select(SyncRun.mailbox_id)).all() == [kept_id]
        assert len(session.exec(select(EmailFolder)).all()) == 1
        assert len(session.exec(select(Attachment)).all()) == 1


def test_create_queues_the_first_sync(
    live_api: LiveApi, mail_user: MailUser, settings: Settings
) -> None:
    response = live_api.client.post("/v1/mailboxes", json=create_body(mail_user))

    assert response.status_code == 201, response.text
    job_key = job_key_prefix + sync_job_id(settings.queue_name, response.json()["id"])
    queue = redis.Redis.from_url(str(settings.redis_url))
    try:
        deadline = time.monotonic() + 5
        while not queue.exists(job_key):  # queued right after the response
            assert time.monotonic() < deadline, "no sync job was queued"
            time.sleep(0.02)
    finally:
        queue.close()


def test_create_answers_503_while_redis_is_down_and_stores_nothing(
    engine: Engine, settings: Settings, mail_user: MailUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    queue_down = settings.model_copy(update={"redis_url": REDIS_DOWN})
    with running_api(engine, queue_down) as live_api:
        response = live_api.client.post("/v1/mailboxes", json=create_body(mail_user))
        listed = live_api.client.get("/v1/mailboxes").json()["items"]

    assert response.status_code == 503, response.text
    assert response.json()["code"] == "connection_budget_unavailable", "no slot to log in with"
    assert response.headers["retry-after"] == "10"
    assert listed == []
    for record in caplog.records:
        assert mail_user.password not in str(record.__dict__)


def test_create_works_when_the_queue_was_down_at_startup(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    redis_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    redis_proxy.take_down()
    proxied = settings.model_copy(update={"redis_url": redis_url_through(redis_proxy)})
    with running_api(engine, proxied) as live_api:  # starts without a queue
        redis_proxy.heal()  # the budget answers again; the app has no queue yet
        response = live_api.client.post("/v1/mailboxes", json=create_body(mail_user))

    assert response.status_code == 201, response.text
    assert response.json()["next_sync_at"] is None  # due: the scheduler's next round syncs it
    assert "mailbox.sync_left_to_scheduler" in caplog.messages
    for record in caplog.records:
        assert mail_user.password not in str(record.__dict__)
