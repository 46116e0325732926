"""Local mail over HTTP: filters, stable pages, bodies, and downloads from the real Dovecot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import Engine

from app.api.pagination import encode_cursor
from app.config import Settings
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.mailgen import Attachment, make_message

NOW = datetime.now(UTC).replace(microsecond=0)
REPORT_ID = "<report-1@example.com>"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PDF_NAME = "Übersicht 2024 (final).pdf"
UNDATED = b"From: Nobody <nobody@example.com>\r\nSubject: undated\r\n\r\nno date header\r\n"


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def sync(engine: Engine, mailbox_id: int, settings: Settings) -> None:
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None
    assert result.error_code is None


def list_all(live_api: LiveApi, mailbox_id: int, **query: Any) -> list[dict[str, Any]]:
    response = live_api.client.get(
        f"/v1/mailboxes/{mailbox_id}/emails", params={"limit": 500, **query}
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


def subjects(items: list[dict[str, Any]]) -> set[str]:
    return {item["subject"] for item in items}


@dataclass(frozen=True)
class Fixture:
    mailbox_id: int
    inbox_uids: dict[str, int]


@pytest.fixture
def filled(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> Fixture:
    """A mailbox whose INBOX and Sent hold mail to filter, synced into the database."""

    def inbox(subject: str, days: float, flags: tuple[str, ...] = (), **fields: Any) -> None:
        message = make_message(subject=subject, date=days_ago(days), **fields)
        uids[subject] = mail_user.append("INBOX", message, flags=flags, date=days_ago(days))

    uids: dict[str, int] = {}
    inbox(
        "Quarterly report",
        9,
        ("\\Seen", "\\Flagged"),
        text="The numbers are inside.\n",
        message_id=REPORT_ID,
    )
    inbox(
        "Grüße aus Köln",
        8,
        sender="Jürgen Groß <juergen@example.de>",
        to="Zoë Ünal <zoe@example.org>",
        cc="Carol <carol@example.com>",
        bcc="Hidden <hidden@example.com>",
        html="<p>Hallo <b>Bob</b></p>",
        headers={"Reply-To": "Replies <replies@example.de>"},
        attachments=(Attachment(PDF_NAME, PDF, "application/pdf"),),
    )
    inbox(
        "Re: Quarterly report",
        7,
        sender="Bob Example <bob@example.com>",
        to="Alice Example <alice@example.com>",
        in_reply_to=REPORT_ID,
        references=REPORT_ID,
    )
    inbox("100% done_now", 6, sender="percent@example.com")
    uids["undated"] = mail_user.append("INBOX", UNDATED, date=days_ago(1))
    mail_user.append(
        "Sent",
        make_message(subject="Outgoing", to="dave@example.net", date=days_ago(5)),
        date=days_ago(5),
    )
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    return Fixture(mailbox_id, uids)


def test_filters_each_return_exactly_the_matching_emails(
    live_api: LiveApi, filled: Fixture
) -> None:
    everything = list_all(live_api, filled.mailbox_id)
    sent_id = next(
        f["folder_id"] for e in everything if e["subject"] == "Outgoing" for f in e["folders"]
    )
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"folder_id": sent_id}, {"Outgoing"}),
        ({"from": "ALICE@"}, {"Quarterly report", "Outgoing"}),
        ({"from": "jürgen gr"}, {"Grüße aus Köln"}),  # the display name
        ({"to": "zoë"}, {"Grüße aus Köln"}),
        ({"to": "carol@"}, {"Grüße aus Köln"}),  # Cc counts
        ({"to": "example.net"}, {"Outgoing"}),
        ({"to": "email"}, set()),  # the JSON keys are not searched
        ({"to": "hidden"}, set()),  # nor Bcc
        ({"subject": "report"}, {"Quarterly report", "Re: Quarterly report"}),
        ({"subject": "%"}, {"100% done_now"}),  # LIKE wildcards are literal
        ({"subject": "_"}, {"100% done_now"}),
        ({"text": "NUMBERS are"}, {"Quarterly report"}),  # the text body
        ({"text": "juergen@"}, {"Grüße aus Köln"}),  # the sender
        ({"text": "Grüße"}, {"Grüße aus Köln"}),  # the subject
        (
            {"since": days_ago(7.5).isoformat()},
            {"Re: Quarterly report", "100% done_now", "Outgoing"},
        ),
        ({"before": days_ago(7.5).isoformat()}, {"Quarterly report", "Grüße aus Köln"}),
        (
            {"since": days_ago(8).date().isoformat(), "before": days_ago(6).isoformat()},
            {"Grüße aus Köln", "Re: Quarterly report"},
        ),
        ({"seen": "true"}, {"Quarterly report"}),
        ({"flagged": "true", "seen": "true"}, {"Quarterly report"}),
        (
            {"seen": "false", "from": "example.com"},
            {"Re: Quarterly report", "100% done_now", "undated", "Outgoing"},
        ),
        ({"thread": REPORT_ID}, {"Quarterly report", "Re: Quarterly report"}),
        ({"from": "nobody", "subject": "report"}, set()),
    ]
    for query, expected in cases:
        assert subjects(list_all(live_api, filled.mailbox_id, **query)) == expected, query


def test_list_is_newest_first_with_undated_mail_last(live_api: LiveApi, filled: Fixture) -> None:
    items = list_all(live_api, filled.mailbox_id)

    assert [item["subject"] for item in items] == [
        "Outgoing",
        "100% done_now",
        "Re: Quarterly report",
        "Grüße aus Köln",
        "Quarterly report",
        "undated",
    ]
    greeting = items[3]
    assert set(greeting) == {
        "id",
        "mailbox_id",
        "folders",
        "message_id",
        "subject",
        "from",
        "to",
        "cc",
        "date",
        "seen",
        "flagged",
        "has_attachments",
        "size",
        "thread_key",
    }
    assert greeting["from"] == {"name": "Jürgen Groß", "email": "juergen@example.de"}
    assert greeting["to"] == [{"name": "Zoë Ünal", "email": "zoe@example.org"}]
    assert greeting["cc"] == [{"name": "Carol", "email": "carol@example.com"}]
    assert greeting["folders"] == [
        {
            "folder_id": greeting["folders"][0]["folder_id"],
            "uid": filled.inbox_uids["Grüße aus Köln"],
        }
    ]
    assert greeting["has_attachments"] is True
    assert datetime.fromisoformat(greeting["date"]) == days_ago(8)
    assert items[-1]["date"] is None


def test_pages_stay_stable_while_new_mail_arrives(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    for n, days in enumerate([9, 8, 7, 7, 7, 5, 4]):  # three share a date: ties go by id
        mail_user.append(
            "INBOX", make_message(subject=f"m{n}", date=days_ago(days)), date=days_ago(1)
        )
    mail_user.append("INBOX", UNDATED, date=days_ago(1))
    mail_user.append("INBOX", UNDATED.replace(b"undated", b"undated too"), date=days_ago(1))
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    original = [item["id"] for item in list_all(live_api, mailbox_id)]
    url = f"/v1/mailboxes/{mailbox_id}/emails"

    first = live_api.client.get(url, params={"limit": 2}).json()
    mail_user.append("INBOX", make_message(subject="newest", date=NOW), date=NOW)
    mail_user.append("INBOX", make_message(subject="late, old date", date=days_ago(6)), date=NOW)
    sync(engine, mailbox_id, settings)
    served = [item["id"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = live_api.client.get(url, params={"limit": 2, "cursor": cursor}).json()
        assert len(page["items"]) <= 2
        served += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]

    assert len(served) == len(set(served))  # nothing twice
    assert [email_id for email_id in served if email_id in original] == original  # no gap
    assert len(served) == len(original) + 1  # the late one with an old date shows up in place


def test_bad_parameters_are_422_naming_the_field(live_api: LiveApi, filled: Fixture) -> None:
    url = f"/v1/mailboxes/{filled.mailbox_id}/emails"
    cases: list[tuple[str, dict[str, Any], str]] = [
        (url, {"cursor": "nonsense"}, "cursor"),
        (url, {"cursor": encode_cursor(["x", 1])}, "cursor"),
        (url, {"cursor": encode_cursor([1, 2])}, "cursor"),
        (url, {"cursor": encode_cursor([None, 2**40])}, "cursor"),
        (url, {"since": "yesterday"}, "since"),
        (url, {"subject": "nul\x00"}, "subject"),
        (url, {"from": ""}, "from"),
        (url, {"folder_id": 2**40}, "folder_id"),
        (url, {"limit": 501}, "limit"),
        ("/v1/mailboxes/99999999999/emails", {}, "mailbox_id"),
        ("/v1/emails/99999999999", {}, "email_id"),
        ("/v1/emails/1/attachments/-1", {}, "n"),
    ]
    for path, query, field in cases:
        response = live_api.client.get(path, params=query)
        assert response.status_code == 422, (path, query)
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == [field], (path, query)


def test_one_email_has_its_bodies_and_attachment_list(live_api: LiveApi, filled: Fixture) -> None:
    by_subject = {item["subject"]: item for item in list_all(live_api, filled.mailbox_id)}

    greeting = live_api.client.get(f"/v1/emails/{by_subject['Grüße aus Köln']['id']}").json()
    reply = live_api.client.get(f"/v1/emails/{by_subject['Re: Quarterly report']['id']}").json()

    assert greeting["text"] == "Hello Bob,\r\n\r\nthis is a test.\r\n"
    assert greeting["html"] == "<p>Hallo <b>Bob</b></p>\r\n"
    assert greeting["bcc"] == [{"name": "Hidden", "email": "hidden@example.com"}]
    assert greeting["reply_to"] == [{"name": "Replies", "email": "replies@example.de"}]
    assert greeting["attachments"] == [
        {
            "n": 0,
            "filename": PDF_NAME,
            "content_type": "application/pdf",
            "size": len(PDF),
            "content_id": None,
            "inline": False,
        }
    ]
    assert reply["in_reply_to"] == REPORT_ID
    assert reply["references"] == [REPORT_ID]
    assert reply["thread_key"] == by_subject["Quarterly report"]["thread_key"]
    assert reply["attachments"] == []


def test_source_and_attachment_come_from_the_server(
    live_api: LiveApi, mail_user: MailUser, filled: Fixture
) -> None:
    greeting = next(
        item
        for item in list_all(live_api, filled.mailbox_id)
        if item["subject"] == "Grüße aus Köln"
    )
    with mail_user.client() as client:
        client.select_folder("INBOX", readonly=True)
        uid = filled.inbox_uids["Grüße aus Köln"]
        appended = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]

    raw = live_api.client.get(f"/v1/emails/{greeting['id']}/raw")
    attachment = live_api.client.get(f"/v1/emails/{greeting['id']}/attachments/0")

    assert raw.status_code == 200
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.content == appended
    assert attachment.status_code == 200
    assert attachment.content == PDF
    assert attachment.headers["content-type"] == "application/pdf"
    disposition = attachment.headers["content-disposition"]
    assert disposition.startswith("attachment; ")
    assert unquote(disposition.split("filename*=UTF-8''")[1]) == PDF_NAME
    assert disposition.isascii()
    assert mail_user.flags("INBOX")[uid] == set()  # fetching does not mark it seen


def test_a_message_gone_from_the_server_is_a_404_problem(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    attachment = Attachment("a.bin", b"\x00\x01\x02", "application/octet-stream")
    uid = mail_user.append("INBOX", make_message(subject="twice", attachments=(attachment,)))
    [copied] = mail_user.copy("INBOX", [uid], "Sent")
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    [email] = list_all(live_api, mailbox_id)
    assert len(email["folders"]) == 2

    mail_user.expunge("INBOX", [uid])  # the first link is stale: the next one serves
    assert live_api.client.get(f"/v1/emails/{email['id']}/raw").status_code == 200
    mail_user.expunge("Sent", [copied])  # now no link holds it
    for path in ("raw", "attachments/0"):
        response = live_api.client.get(f"/v1/emails/{email['id']}/{path}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "gone_from_server"


def test_a_renumbered_folder_is_not_trusted_until_the_next_sync(
    live_api: LiveApi,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mail_user.append("INBOX", make_message(subject="renumbered"))
    mailbox_id = add_mailbox(mail_user)
    sync(engine, mailbox_id, settings)
    [email] = list_all(live_api, mailbox_id)

    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 7)
    stale = live_api.client.get(f"/v1/emails/{email['id']}/raw")
    sync(engine, mailbox_id, settings)
    relinked = live_api.client.get(f"/v1/emails/{email['id']}/raw")

    assert (stale.status_code, stale.json()["code"]) == (404, "gone_from_server")
    assert relinked.status_code == 200
    assert b"Subject: renumbered" in relinked.content


def test_unknown_ids_are_404_problems(live_api: LiveApi, filled: Fixture) -> None:
    email_id = list_all(live_api, filled.mailbox_id)[0]["id"]
    for path in (
        "/v1/mailboxes/987654/emails",
        "/v1/emails/987654",
        "/v1/emails/987654/raw",
        "/v1/emails/987654/attachments/0",
        f"/v1/emails/{email_id}/attachments/3",
    ):
        response = live_api.client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found", path
