"""Remote search over HTTP: the real Dovecot answers, through the search query builder."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from app.config import Settings
from app.security import SecretBox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.mailgen import Attachment, make_message


def on(month: int) -> datetime:
    return datetime(2024, month, 10, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Fixture:
    mailbox_id: int
    uids: dict[str, int]


@pytest.fixture
def server_mail(mail_user: MailUser, add_mailbox: MailboxFactory) -> Fixture:
    """An INBOX on the server only (nothing synced), one message a month in 2024."""

    def append(name: str, month: int, flags: tuple[str, ...] = (), **fields: Any) -> None:
        message = make_message(date=on(month), **fields)
        uids[name] = mail_user.append("INBOX", message, flags=flags, date=on(month))

    uids: dict[str, int] = {}
    append("invoice17", 1, ("\\Seen",), subject="Invoice 17")
    append("invoice18", 2, ("\\Flagged",), subject="Invoice 18", sender="bob@example.com")
    append("greeting", 3, subject="Grüße aus Köln", text="Viele Grüße von der Straße\n")
    append(
        "meeting",
        4,
        ("\\Seen", "\\Flagged"),
        subject="Meeting",
        sender="Carol Example <carol@example.com>",
        to="Dave <dave@example.net>",
        cc="Erin <erin@example.org>",
        attachments=(Attachment("agenda.txt", b"1. budget\n", "text/plain"),),
    )
    append("invoice19", 5, subject="Invoice 19")
    return Fixture(add_mailbox(mail_user), uids)


def search(live_api: LiveApi, mailbox_id: int, **body: Any) -> dict[str, Any]:
    response = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/search", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_criteria_find_exactly_the_matching_messages_newest_first(
    live_api: LiveApi, server_mail: Fixture
) -> None:
    uid = server_mail.uids
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["invoice19", "meeting", "greeting", "invoice18", "invoice17"]),
        ({"from": "alice"}, ["invoice19", "greeting", "invoice17"]),
        ({"subject": "invoice"}, ["invoice19", "invoice18", "invoice17"]),
        ({"subject": "Grüße"}, ["greeting"]),
        ({"body": "Straße"}, ["greeting"]),
        ({"text": "erin@"}, ["meeting"]),
        ({"to": "dave"}, ["meeting"]),
        ({"cc": "erin"}, ["meeting"]),
        ({"since": "2024-03-01"}, ["invoice19", "meeting", "greeting"]),
        ({"since": "2024-02-01", "before": "2024-04-01"}, ["greeting", "invoice18"]),
        ({"seen": True}, ["meeting", "invoice17"]),
        ({"seen": False, "from": "alice"}, ["invoice19", "greeting"]),
        ({"flagged": True, "seen": True}, ["meeting"]),
        ({"flagged": False, "subject": "invoice", "since": "2024-02-01"}, ["invoice19"]),
        (
            {"uid_from": uid["invoice18"], "uid_to": uid["meeting"]},
            ["meeting", "greeting", "invoice18"],
        ),
        ({"uid_from": uid["invoice19"] + 10}, []),  # IMAP's "n:*" would match the last one
        ({"subject": "a) OR ALL"}, []),  # a term cannot add search keys
    ]
    for criteria, expected in cases:
        result = search(live_api, server_mail.mailbox_id, **criteria)
        assert [item["uid"] for item in result["items"]] == [uid[n] for n in expected], criteria
        assert result["total"] == len(expected), criteria


def test_limit_keeps_the_newest_and_total_counts_all(
    live_api: LiveApi, server_mail: Fixture
) -> None:
    result = search(live_api, server_mail.mailbox_id, subject="invoice", limit=2)

    assert [item["uid"] for item in result["items"]] == [
        server_mail.uids["invoice19"],
        server_mail.uids["invoice18"],
    ]
    assert result["total"] == 3


def test_items_summarise_each_message_without_marking_it_seen(
    live_api: LiveApi, mail_user: MailUser, server_mail: Fixture
) -> None:
    [meeting, greeting] = search(
        live_api,
        server_mail.mailbox_id,
        uid_from=server_mail.uids["greeting"],
        uid_to=server_mail.uids["meeting"],
    )["items"]

    assert set(meeting) == {
        "uid",
        "message_id",
        "subject",
        "from",
        "to",
        "cc",
        "date",
        "seen",
        "flagged",
        "size",
        "has_attachments",
    }
    assert meeting["from"] == {"name": "Carol Example", "email": "carol@example.com"}
    assert meeting["to"] == [{"name": "Dave", "email": "dave@example.net"}]
    assert meeting["cc"] == [{"name": "Erin", "email": "erin@example.org"}]
    assert (meeting["seen"], meeting["flagged"], meeting["has_attachments"]) == (True, True, True)
    assert datetime.fromisoformat(meeting["date"]) == on(4)
    assert meeting["message_id"].startswith("<test-")
    assert meeting["size"] > 0
    assert (greeting["subject"], greeting["seen"], greeting["has_attachments"]) == (
        "Grüße aus Köln",
        False,
        False,
    )
    assert mail_user.flags("INBOX")[server_mail.uids["greeting"]] == set()


def test_bad_requests_name_the_field(live_api: LiveApi, server_mail: Fixture) -> None:
    url = f"/v1/mailboxes/{server_mail.mailbox_id}/search"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"subject": "a\r\nb"}, "subject"),
        ({"from": "x\ny"}, "from"),
        ({"body": "nul\x00"}, "body"),
        ({"limit": 501}, "limit"),
        ({"limit": 0}, "limit"),
        ({"uid_from": 5, "uid_to": 4}, "uid_to"),
        ({"since": "last week"}, "since"),
        ({"folder": "IN\r\nBOX"}, "folder"),
        ({"sender": "alice"}, "sender"),  # unknown fields are refused, not ignored
    ]
    for body, field in cases:
        response = live_api.client.post(url, json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in response.json()["errors"]] == [field], body


def test_unknown_folder_and_mailbox_are_404_problems(
    live_api: LiveApi, server_mail: Fixture
) -> None:
    assert search(live_api, server_mail.mailbox_id, folder="Sent") == {"items": [], "total": 0}

    folder = live_api.client.post(
        f"/v1/mailboxes/{server_mail.mailbox_id}/search", json={"folder": "Nowhere"}
    )
    mailbox = live_api.client.post("/v1/mailboxes/987654/search", json={})

    assert folder.status_code == 404
    assert folder.json()["code"] == "folder_not_found"
    assert mailbox.status_code == 404
    assert mailbox.headers["content-type"] == "application/problem+json"


def test_server_failures_are_the_problems_of_the_table(
    live_api: LiveApi, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    wrong = "wrong-Secret-42"
    refused = add_mailbox(mail_user, password_enc=SecretBox.from_settings(settings).encrypt(wrong))
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = add_mailbox(mail_user, email_address="other@example.com", port=closed_port)

    auth = live_api.client.post(f"/v1/mailboxes/{refused}/search", json={})
    down = live_api.client.post(f"/v1/mailboxes/{unreachable}/search", json={})

    assert (auth.status_code, auth.json()["code"]) == (422, "auth_failed")
    assert (down.status_code, down.json()["code"]) == (502, "unreachable")
    assert wrong not in auth.text
