"""`PATCH /v1/emails/{id}`: seen/flagged written to the server, then locally, announced once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, Event, Mailbox
from app.imap import Security
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.hostile_imap import rewriting_proxy
from tests.support.live_api import LiveApi
from tests.support.mailgen import make_message
from tests.support.ports import free_port

RECENT = datetime.now(UTC) - timedelta(days=2)


def sync(engine: Engine, mailbox_id: int, settings: Settings) -> None:
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None, "the lease was free"
    assert result.error_code is None, result.error_code


def updates(engine: Engine, mailbox_id: int) -> list[dict[str, Any]]:
    """The `email.updated` events of the mailbox, oldest first."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Event.data)
            .where(Event.mailbox_id == mailbox_id, Event.type == "email.updated")
            .order_by(col(Event.id))
        ).all()
    return [dict(row) for row in rows]


def stored_flags(engine: Engine, email_id: int) -> tuple[bool, bool]:
    with session_scope(engine) as session:
        email = session.get(Email, email_id)
        assert email is not None
        return email.seen, email.flagged


def only_email_id(engine: Engine, mailbox_id: int) -> int:
    with session_scope(engine) as session:
        [email_id] = session.exec(select(Email.id).where(Email.mailbox_id == mailbox_id))
    assert email_id is not None
    return email_id


SyncTheEmail = Callable[[], tuple[int, int]]


@pytest.fixture
def sync_the_email(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> SyncTheEmail:
    """Register the test user, whose one message is appended already, and sync it; the
    function returns the mailbox's id and the email's."""

    def register_and_sync() -> tuple[int, int]:
        mailbox_id = add_mailbox(mail_user)
        sync(engine, mailbox_id, settings)
        return mailbox_id, only_email_id(engine, mailbox_id)

    return register_and_sync


def test_flags_written_back_reach_the_server_and_the_outbox_once(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    sync_the_email: SyncTheEmail,
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="read me"), date=RECENT)
    mailbox_id, email_id = sync_the_email()

    response = live_api.client.patch(f"/v1/emails/{email_id}", json={"seen": True, "flagged": True})

    assert response.status_code == 200, response.text
    assert (response.json()["seen"], response.json()["flagged"]) == (True, True)
    assert mail_user.flags("INBOX")[uid] == {"\\Seen", "\\Flagged"}, "another client sees them"
    assert stored_flags(engine, email_id) == (True, True)
    [announced] = updates(engine, mailbox_id)
    [state] = announced["emails"]
    assert (state["id"], state["seen"], state["flagged"]) == (email_id, True, True)

    sync(engine, mailbox_id, settings)  # sees our own STORE as a change of the folder
    assert len(updates(engine, mailbox_id)) == 1, "the sync announced our own write-back again"

    again = live_api.client.patch(f"/v1/emails/{email_id}", json={"seen": True})
    assert again.status_code == 200, again.text
    assert len(updates(engine, mailbox_id)) == 1, "flags already stored are no change"

    cleared = live_api.client.patch(f"/v1/emails/{email_id}", json={"flagged": False})
    assert cleared.status_code == 200, cleared.text
    assert mail_user.flags("INBOX")[uid] == {"\\Seen"}, "only \\Flagged was removed"
    assert stored_flags(engine, email_id) == (True, False)


def test_a_message_in_two_folders_gets_the_flag_in_both(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    sync_the_email: SyncTheEmail,
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="twice"), date=RECENT)
    [copied] = mail_user.copy("INBOX", [uid], "Sent")
    mailbox_id, email_id = sync_the_email()

    response = live_api.client.patch(f"/v1/emails/{email_id}", json={"flagged": True})

    assert response.status_code == 200, response.text
    assert mail_user.flags("INBOX")[uid] == {"\\Flagged"}
    assert mail_user.flags("Sent")[copied] == {"\\Flagged"}
    sync(engine, mailbox_id, settings)
    assert len(updates(engine, mailbox_id)) == 1


def test_a_message_expunged_meanwhile_is_a_404_and_stays_as_it_was(
    live_api: LiveApi, engine: Engine, mail_user: MailUser, sync_the_email: SyncTheEmail
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="gone"), date=RECENT)
    mailbox_id, email_id = sync_the_email()
    mail_user.expunge("INBOX", [uid])

    response = live_api.client.patch(f"/v1/emails/{email_id}", json={"seen": True})

    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "gone_from_server"
    assert stored_flags(engine, email_id) == (False, False)
    assert updates(engine, mailbox_id) == []


def test_an_unreachable_server_is_a_502_and_nothing_changes_locally(
    live_api: LiveApi, engine: Engine, mail_user: MailUser, sync_the_email: SyncTheEmail
) -> None:
    mail_user.append("INBOX", make_message(subject="offline"), date=RECENT)
    mailbox_id, email_id = sync_the_email()
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        mailbox.port = free_port()  # nobody listens there

    response = live_api.client.patch(f"/v1/emails/{email_id}", json={"seen": True})

    assert response.status_code == 502, response.text
    assert response.json()["code"] == "unreachable"
    assert stored_flags(engine, email_id) == (False, False)
    assert updates(engine, mailbox_id) == []


def _read_only(line: bytes) -> bytes:
    """Make every read-write SELECT say the folder is read-only, as a shared folder would."""
    return line.replace(b"[READ-WRITE]", b"[READ-ONLY]")


def test_a_folder_the_server_keeps_read_only_is_a_409_and_nothing_changes(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    uid = mail_user.append("INBOX", make_message(subject="shared, read-only"), date=RECENT)
    with rewriting_proxy(mail_user.dovecot.plain_port, _read_only) as port:
        mailbox_id = add_mailbox(mail_user, port=port, security=Security.NONE)
        sync(engine, mailbox_id, settings)
        email_id = only_email_id(engine, mailbox_id)

        response = live_api.client.patch(f"/v1/emails/{email_id}", json={"flagged": True})

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "folder_read_only"
    assert mail_user.flags("INBOX")[uid] == set(), "a flag was stored on the server"
    assert stored_flags(engine, email_id) == (False, False)
    assert updates(engine, mailbox_id) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"seen": "yes"}, "seen"),
        ({"flagged": 1}, "flagged"),
        ({"seen": True, "flagged": None}, "flagged"),
        ({"seen": True, "answered": True}, "answered"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(
    live_api: LiveApi, body: dict[str, Any], field: str | None
) -> None:
    response = live_api.client.patch("/v1/emails/1", json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert field in {error["field"] for error in response.json()["errors"]}, response.text
