"""Folder list and folder sync settings over HTTP, against the real Dovecot."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox
from app.sync.service import sync_mailbox
from tests.support.dovecot import Dovecot, MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message

RECENT = datetime.now(UTC) - timedelta(days=3)


def synced(engine: Engine, settings: Settings, mailbox_id: int) -> None:
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None, "the lease was free"


def folders_by_name(live_api: LiveApi, mailbox_id: int) -> dict[str, dict[str, Any]]:
    response = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/folders")
    assert response.status_code == 200
    return {folder["full_name"]: folder for folder in response.json()}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_folder_list_after_a_sync_has_types_parents_and_counts(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    for n in range(2):
        mail_user.append("INBOX", make_message(subject=f"in {n}"), date=RECENT)
    mail_user.append("Sent", make_message(subject="out"), date=RECENT)
    mail_user.append("Archive", make_message(subject="kept"), date=RECENT)
    mail_user.create_folder("Projects")
    mail_user.create_folder("Projects/Alpha")
    mailbox_id = add_mailbox(mail_user)
    synced(engine, settings, mailbox_id)

    folders = folders_by_name(live_api, mailbox_id)

    inbox, sent, archive = folders["INBOX"], folders["Sent"], folders["Archive"]
    assert set(inbox) == {
        "id",
        "full_name",
        "name",
        "parent_id",
        "delimiter",
        "type",
        "sync_enabled",
        "outdated",
        "message_count",
        "synced_at",
    }
    assert (inbox["type"], inbox["sync_enabled"], inbox["message_count"]) == ("inbox", True, 2)
    assert (sent["type"], sent["sync_enabled"], sent["message_count"]) == ("sent", True, 1)
    # Not synced: its message on the server is not in the local copy.
    assert (archive["type"], archive["sync_enabled"], archive["message_count"]) == (
        "archive",
        False,
        0,
    )
    assert archive["synced_at"] is None
    assert inbox["synced_at"] is not None
    alpha = folders["Projects/Alpha"]
    assert (alpha["name"], alpha["delimiter"], alpha["type"]) == ("Alpha", "/", "other")
    assert alpha["parent_id"] == folders["Projects"]["id"]
    assert inbox["parent_id"] is None
    assert not any(folder["outdated"] for folder in folders.values())


def test_enabling_archive_refreshes_folders_and_the_next_sync_brings_its_mail(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mail_user.append("INBOX", make_message(subject="hello"), date=RECENT)
    mail_user.append("Archive", make_message(subject="archived"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    synced(engine, settings, mailbox_id)
    archive_id = folders_by_name(live_api, mailbox_id)["Archive"]["id"]
    mail_user.create_folder("Later")  # the folder refresh finds it, without fetching mail

    response = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}/folders", json=[{"id": archive_id, "sync_enabled": True}]
    )

    assert response.status_code == 200
    assert response.headers["sync-status"] == "succeeded"
    returned = {folder["full_name"]: folder for folder in response.json()}
    assert returned["Archive"]["sync_enabled"] is True
    assert returned["Archive"]["message_count"] == 0
    assert "Later" in returned
    run = live_api.client.get(f"/v1/sync-runs/{response.headers['sync-run-id']}").json()
    assert (run["folders_only"], run["status"], run["counts"]["folders_added"]) == (
        True,
        "succeeded",
        1,
    )

    synced(engine, settings, mailbox_id)

    assert folders_by_name(live_api, mailbox_id)["Archive"]["message_count"] == 1


def test_a_folder_of_another_mailbox_is_refused_and_nothing_is_saved(
    *,
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    dovecot: Dovecot,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mine, theirs = add_mailbox(mail_user), add_mailbox(dovecot.add_user())
    for mailbox_id in (mine, theirs):
        synced(engine, settings, mailbox_id)
    my_archive = folders_by_name(live_api, mine)["Archive"]
    their_inbox = folders_by_name(live_api, theirs)["INBOX"]

    response = live_api.client.patch(
        f"/v1/mailboxes/{mine}/folders",
        json=[
            {"id": my_archive["id"], "sync_enabled": True},
            {"id": their_inbox["id"], "sync_enabled": False},
            {"id": 987654, "sync_enabled": False},
        ],
    )

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert [error["field"] for error in problem["errors"]] == ["1.id", "2.id"]
    assert folders_by_name(live_api, mine)["Archive"]["sync_enabled"] is False
    assert folders_by_name(live_api, theirs)["INBOX"]["sync_enabled"] is True


def test_settings_are_saved_when_the_server_is_down_and_the_answer_says_so(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    synced(engine, settings, mailbox_id)
    archive_id = folders_by_name(live_api, mailbox_id)["Archive"]["id"]
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.port = closed_port()

    response = live_api.client.patch(
        f"/v1/mailboxes/{mailbox_id}/folders", json=[{"id": archive_id, "sync_enabled": True}]
    )

    assert response.status_code == 200
    assert response.headers["sync-status"] == "failed"
    assert response.headers["sync-error-code"] == "unreachable"
    assert {f["full_name"]: f for f in response.json()}["Archive"]["sync_enabled"] is True
    assert folders_by_name(live_api, mailbox_id)["Archive"]["sync_enabled"] is True
    run = live_api.client.get(f"/v1/sync-runs/{response.headers['sync-run-id']}").json()
    assert (run["status"], run["error_code"]) == ("failed", "unreachable")


def test_bad_bodies_and_unknown_mailboxes_are_problems(
    live_api: LiveApi, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    url = f"/v1/mailboxes/{mailbox_id}/folders"

    missing_flag = live_api.client.patch(url, json=[{"id": 1}])
    empty = live_api.client.patch(url, json=[])
    unknown_get = live_api.client.get("/v1/mailboxes/987654/folders")
    unknown_patch = live_api.client.patch(
        "/v1/mailboxes/987654/folders", json=[{"id": 1, "sync_enabled": True}]
    )

    assert missing_flag.status_code == 422
    assert missing_flag.json()["errors"][0]["field"] == "0.sync_enabled"
    assert empty.status_code == 422
    for response in (unknown_get, unknown_patch):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"
