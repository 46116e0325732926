"""The email list's body: exactly what its documented model renders, whatever the row holds."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from app.api.emails.schemas import EmailSummary
from app.api.pagination import Page, encode_cursor
from app.db import session_scope
from app.imap import FolderType
from tests.support.factories import create_email, create_folder, create_mailbox, id_of, link_email
from tests.support.live_api import LiveApi

ZOE = {"name": "Zoë Ünal", "email": "zoe@example.org"}
CAROL = {"name": None, "email": "carol@example.com"}


def test_the_list_is_laid_out_as_its_schema_and_as_each_email_alone(
    live_api: LiveApi, engine: Engine
) -> None:
    with session_scope(engine) as session:
        mailbox = create_mailbox(session)
        inbox = create_folder(session, mailbox)
        archive = create_folder(
            session, mailbox, full_name="Archive", name="Archive", type=FolderType.ARCHIVE
        )
        full = create_email(
            session,
            mailbox,
            subject='Grüße \u2028 "quoted" \x01',
            from_name="Jürgen Groß",
            from_email="juergen@example.de",
            to=[ZOE, CAROL],
            cc=[CAROL],
            date=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
            seen=True,
            flagged=True,
            has_attachments=True,
            size=4321,
            thread_key="<root@example.com>",
        )
        name_only = create_email(
            session,
            mailbox,
            from_name="Only A Name",
            message_id=None,
            subject=None,
            date=datetime(2024, 5, 5, tzinfo=UTC),
        )
        no_sender = create_email(session, mailbox, date=None)
        link_email(session, full, archive, 7)
        link_email(session, full, inbox, 3)
        link_email(session, name_only, inbox, 1)
        mailbox_id = id_of(mailbox)

    response = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/emails")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    documented = Page[EmailSummary].model_validate_json(response.content)
    assert documented.model_dump_json(by_alias=True).encode() == response.content
    items = response.json()["items"]
    assert [item["id"] for item in items] == [id_of(full), id_of(name_only), id_of(no_sender)]
    assert items[0]["folders"] == [
        {"folder_id": id_of(inbox), "uid": 3},
        {"folder_id": id_of(archive), "uid": 7},
    ]
    assert items[0]["to"] == [ZOE, CAROL]
    assert items[0]["date"] == "2024-05-06T07:08:09.123456Z"
    assert [item["from"] for item in items] == [
        {"name": "Jürgen Groß", "email": "juergen@example.de"},
        {"name": "Only A Name", "email": ""},
        None,
    ]
    assert items[2]["folders"] == []
    for item in items:
        alone = live_api.client.get(f"/v1/emails/{item['id']}").json()
        assert {field: alone[field] for field in item} == item


def test_a_missing_mailbox_is_404_even_with_a_bad_cursor(live_api: LiveApi, engine: Engine) -> None:
    with session_scope(engine) as session:
        mailbox_id = id_of(create_mailbox(session))
    path = f"/v1/mailboxes/{mailbox_id}/emails"
    bad_cursor = {"cursor": encode_cursor(["x", 1])}

    empty = live_api.client.get(path)
    missing = live_api.client.get(f"/v1/mailboxes/{mailbox_id + 1}/emails", params=bad_cursor)
    refused = live_api.client.get(path, params=bad_cursor)

    assert empty.status_code == 200
    assert empty.json() == {"items": [], "next_cursor": None}
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert refused.status_code == 422
    assert [error["field"] for error in refused.json()["errors"]] == ["cursor"]
