"""The fast UID FETCH reader answers exactly as imapclient's fetch does, on the real Dovecot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.imap import EmailManager, ImapConnection, connect
from app.imap.config import ConnectOptions
from app.imap.fetch import uid_fetch
from tests.support.dovecot import MailUser
from tests.support.imap_config import config_for
from tests.support.mailgen import Attachment, make_message

BODY_ITEMS = [b"UID", b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]"]

LITERAL_LOOKING = (
    b"From: a@example.com\r\n"
    b"Subject: {5}\r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"* 1 FETCH (UID 99 BODY[] {12}\r\n"
    b"A1 OK done )\r\n"
    b"ends with a literal marker {3}\r\n"
)
EIGHT_BIT = (
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.de>\r\n"
    b"Subject: Gr\xc3\xbc\xc3\x9fe \xff\xfe\r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0100\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9fe, raw \x80\x81 bytes\r\n"
)


def corpus() -> list[tuple[bytes, list[str]]]:
    """Messages and flags that exercise every value shape the reader parses."""
    return [
        (make_message(subject="plain"), []),
        (LITERAL_LOOKING, ["\\Seen"]),
        (EIGHT_BIT, ["\\Flagged", "$Label1", "Custom_keyword"]),
        (
            make_message(
                subject='Grüße (with parens) and "quotes" \\ backslash',
                html="<p>hello</p>",
                attachments=(Attachment("a.bin", bytes(range(256)) * 300, "application/pdf"),),
            ),
            ["\\Answered", "\\Draft", "$Forwarded"],
        ),
        (b"Subject: headers only, no body\r\n\r\n", []),
    ]


def fetch_with_imapclient(
    connection: ImapConnection, uids: list[int], items: list[bytes]
) -> dict[int, dict[bytes, Any]]:
    response: dict[int, dict[bytes, Any]] = connection.client.fetch(uids, items)
    return {uid: dict(data) for uid, data in response.items()}


def fetch_with_reader(
    connection: ImapConnection, uids: list[int], items: list[bytes]
) -> dict[int, dict[bytes, Any]]:
    merged: dict[int, dict[bytes, Any]] = {}
    for uid, data in uid_fetch(connection.client._imap, uids, items):
        merged.setdefault(uid, {}).update(data)
    return merged


def test_reader_returns_what_imapclient_returns(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    uids = [mail_user.append("INBOX", raw, flags=flags) for raw, flags in corpus()]
    connection.client.normalise_times = False
    EmailManager(connection).select_folder("INBOX")
    missing = uids[-1] + 50
    expected = fetch_with_imapclient(connection, [*uids, missing], BODY_ITEMS)
    assert fetch_with_reader(connection, [*uids, missing], BODY_ITEMS) == expected
    assert set(expected) == set(uids)
    assert expected[uids[1]][b"BODY[]"] == LITERAL_LOOKING
    assert expected[uids[2]][b"BODY[]"] == EIGHT_BIT
    assert set(expected[uids[2]][b"FLAGS"]) - {b"\\Recent"} == {
        b"\\Flagged",
        b"$Label1",
        b"Custom_keyword",
    }


def test_internal_dates_of_other_zones_are_the_same_instants(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    zones = [timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), UTC]
    moment = datetime(2024, 2, 29, 23, 59, 30)
    uids = [
        mail_user.append("INBOX", make_message(), date=moment.replace(tzinfo=zone))
        for zone in zones
    ]
    connection.client.normalise_times = False
    EmailManager(connection).select_folder("INBOX")

    read = fetch_with_reader(connection, uids, [b"UID", b"INTERNALDATE"])

    assert read == fetch_with_imapclient(connection, uids, [b"UID", b"INTERNALDATE"])
    assert [read[uid][b"INTERNALDATE"].astimezone(UTC) for uid in uids] == [
        moment.replace(tzinfo=zone).astimezone(UTC) for zone in zones
    ]


def test_items_the_strict_parser_does_not_read_go_to_imapclients_parser(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    uids = [mail_user.append("INBOX", raw, flags=flags) for raw, flags in corpus()]
    connection.client.normalise_times = False
    EmailManager(connection).select_folder("INBOX")
    items = [b"UID", b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]", b"ENVELOPE", b"MODSEQ"]
    expected = fetch_with_imapclient(connection, uids, items)
    assert fetch_with_reader(connection, uids, items) == expected
    assert all(b"ENVELOPE" in data for data in expected.values())


def test_changes_by_another_session_during_the_fetch_read_as_imapclient_reads_them(
    mail_user: MailUser, connection: ImapConnection, connect_options: ConnectOptions
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"n{i}")) for i in range(6)]
    with connect(config_for(mail_user), connect_options) as reference:
        for session in (connection, reference):
            session.client.normalise_times = False
            EmailManager(session).select_folder("INBOX")
        mail_user.expunge("INBOX", [uids[2]])
        mail_user.add_flags("INBOX", [uids[4]], ["$Important"])
        mail_user.append("INBOX", make_message(subject="late"))

        expected = fetch_with_imapclient(reference, uids, BODY_ITEMS)
        assert fetch_with_reader(connection, uids, BODY_ITEMS) == expected
    assert set(expected) <= set(uids)  # Dovecot may still serve the expunged message


def test_fetch_skips_mail_expunged_meanwhile_and_the_session_stays_usable(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"n{i}")) for i in range(6)]
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    mail_user.expunge("INBOX", [uids[2]])
    mail_user.add_flags("INBOX", [uids[4]], ["$Important"])
    arrived = mail_user.append("INBOX", make_message(subject="late"))

    fetched = list(mail.fetch(uids))

    assert [m.uid for m in fetched] == [uid for uid in uids if uid != uids[2]]
    assert "$Important" in fetched[3].flags
    assert mail.search(mail.query().build()) == [*uids[:2], *uids[3:], arrived]


@pytest.mark.parametrize("batch_size", [1, 4, 200])
def test_fetch_keeps_the_order_given_whatever_the_batch_size(
    mail_user: MailUser, connection: ImapConnection, batch_size: int
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"n{i}")) for i in range(7)]
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    newest_first = sorted(uids, reverse=True)
    fetched = list(mail.fetch(newest_first, batch_size=batch_size))
    assert [(m.uid, m.subject) for m in fetched] == [
        (uid, f"n{uids.index(uid)}") for uid in newest_first
    ]
