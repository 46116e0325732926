"""Selecting, finding and fetching mail from the real test Dovecot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.imap import EmailManager, FolderManager, ImapConnection, connect
from app.imap.config import ConnectOptions
from app.imap.errors import FolderNotFound, ProtocolError
from tests.support.dovecot import Dovecot, MailUser
from tests.support.imap_config import config_for
from tests.support.mailgen import Attachment, make_message

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x01\x02" * 500


def test_select_reports_the_checkpoint_counters(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    uid = mail_user.append("INBOX", make_message())
    selected = EmailManager(connection).select_folder("INBOX")
    assert selected.uidvalidity == mail_user.uidvalidity("INBOX")
    assert selected.uidnext == uid + 1
    assert selected.exists == 1
    assert selected.highestmodseq is not None


def test_uids_lists_the_range_and_nothing_above_the_last_message(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    """`UID FETCH n:*` answers with the last message even when n is above it (RFC 3501 6.4.8)."""
    uids = [mail_user.append("INBOX", make_message()) for _ in range(4)]
    mail_user.expunge("INBOX", [uids[1]])
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    assert mail.uids(1) == [uids[0], uids[2], uids[3]]
    assert mail.uids(uids[1], uids[2]) == [uids[2]]
    assert mail.uids(uids[3] + 1) == []


def test_selecting_a_missing_folder_is_folder_not_found(connection: ImapConnection) -> None:
    with pytest.raises(FolderNotFound):
        EmailManager(connection).select_folder("No such folder")


def test_after_unselecting_status_sees_mail_added_while_selected(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    """STATUS of the selected folder would answer from the session's view, blind to it."""
    mail_user.append("INBOX", make_message(subject="before"))
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    uid = mail_user.append("INBOX", make_message(subject="meanwhile"))
    mail.unselect_folder()
    assert FolderManager(connection).status("INBOX").uidnext == uid + 1


def test_unselecting_a_read_write_folder_expunges_nothing(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    uid = mail_user.append("INBOX", make_message())
    mail_user.add_flags("INBOX", [uid], ["\\Deleted"])
    mail = EmailManager(connection)
    mail.select_folder("INBOX", readonly=False)
    mail.unselect_folder()
    assert mail_user.uids("INBOX") == [uid]


@pytest.fixture
def legacy_session(
    legacy_dovecot: Dovecot, connect_options: ConnectOptions
) -> Iterator[tuple[MailUser, ImapConnection]]:
    """A user of the server without UNSELECT, and a session of theirs."""
    user = legacy_dovecot.add_user()
    options = replace(connect_options, ca_file=legacy_dovecot.ca_file)
    with connect(config_for(user), options) as session:
        yield user, session


def test_without_unselect_leaving_an_examined_folder_closes_it_and_expunges_nothing(
    legacy_session: tuple[MailUser, ImapConnection],
) -> None:
    user, connection = legacy_session
    deleted = user.append("INBOX", make_message(subject="deleted"))
    user.add_flags("INBOX", [deleted], ["\\Deleted"])
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    added = user.append("INBOX", make_message(subject="meanwhile"))

    mail.unselect_folder()

    assert FolderManager(connection).status("INBOX").uidnext == added + 1
    assert user.uids("INBOX") == [deleted, added]


def test_without_unselect_leaving_a_read_write_folder_is_refused(
    legacy_session: tuple[MailUser, ImapConnection],
) -> None:
    """CLOSE would expunge a folder selected read-write (RFC 3501 6.4.2)."""
    user, connection = legacy_session
    deleted = user.append("INBOX", make_message())
    user.add_flags("INBOX", [deleted], ["\\Deleted"])
    mail = EmailManager(connection)
    mail.select_folder("INBOX", readonly=False)

    with pytest.raises(ProtocolError, match="expunge"):
        mail.unselect_folder()

    assert user.uids("INBOX") == [deleted]


def test_unselecting_with_no_folder_selected_sends_nothing(connection: ImapConnection) -> None:
    before = connection.commands_sent
    EmailManager(connection).unselect_folder()
    assert connection.commands_sent == before


def test_find_returns_parsed_matches_only(mail_user: MailUser, connection: ImapConnection) -> None:
    mail_user.append("INBOX", make_message(subject="Weekly notification", sender="test@test.com"))
    mail_user.append("INBOX", make_message(subject="Weekly notification", sender="x@test.com"))
    mail_user.append("INBOX", make_message(subject="Invoice", sender="test@test.com"))
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    query = mail.query().sender("test@test.com").subject("notification").build()
    found = mail.find(query)
    assert [(m.subject, m.sender.email if m.sender else None) for m in found] == [
        ("Weekly notification", "test@test.com")
    ]


def test_fetch_parses_bodies_attachments_and_headers(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    sent = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    raw = make_message(
        subject="Grüße aus Köln — €",
        sender='"Müller, Jörg" <joerg@example.de>',
        to="Bob <bob@example.com>, carol@example.com",
        date=sent,
        text="Hallo Bob, schöne Grüße.\n",
        html="<p>Hallo Bob, <b>schöne</b> Grüße.</p>",
        attachments=(Attachment("Preisliste €.pdf", PDF, "application/pdf"),),
        message_id="<grüße-1@example.de>".encode("ascii", "ignore").decode(),
    )
    uid = mail_user.append("INBOX", raw, flags=["\\Seen"])
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    [message] = list(mail.fetch([uid]))

    assert message.subject == "Grüße aus Köln — €"
    assert message.sender is not None
    assert (message.sender.name, message.sender.email) == ("Müller, Jörg", "joerg@example.de")
    assert [a.email for a in message.to] == ["bob@example.com", "carol@example.com"]
    assert message.date == sent
    assert message.text is not None and "schöne Grüße" in message.text
    assert message.html is not None and "<b>schöne</b>" in message.html
    assert message.seen and not message.flagged
    assert message.size == len(raw)
    assert message.internal_date is not None and message.internal_date.tzinfo is not None
    [attachment] = message.attachments
    assert (attachment.filename, attachment.content_type) == ("Preisliste €.pdf", "application/pdf")
    assert attachment.size == len(PDF)
    assert b"".join(mail.part_chunks(uid, attachment.part_id, 1 << 20) or []) == PDF
    assert not message.malformed


def test_inline_image_is_an_inline_attachment_fetched_by_part(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    raw = make_message(
        text=None,
        html='<p>Logo: <img src="cid:logo@x"></p>',
        attachments=(Attachment("logo.png", PNG, "image/png", inline_cid="logo@x"),),
    )
    uid = mail_user.append("INBOX", raw)
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    [message] = list(mail.fetch([uid]))
    [image] = message.attachments
    assert (image.content_id, image.inline) == ("logo@x", True)
    assert b"".join(mail.part_chunks(uid, image.part_id, 1 << 20) or []) == PNG


def test_broken_message_is_parsed_best_effort_without_stopping_the_batch(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    broken = (
        b"From: =?x-unknown?B?garbage?= <a@example.com>\r\n"
        b"Subject: half \xff\xfe broken\r\n"
        b"Date: the day after tomorrow\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/plain; charset=bogus\r\n\r\n"
        b"body text \x00 with a NUL\r\n"
    )
    first = mail_user.append("INBOX", make_message(subject="before"))
    bad = mail_user.append("INBOX", broken)
    last = mail_user.append("INBOX", make_message(subject="after"))
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    messages = list(mail.fetch([first, bad, last]))
    assert [m.uid for m in messages] == [first, bad, last]
    damaged = messages[1]
    assert damaged.malformed
    assert damaged.date is None
    assert damaged.text is not None and "body text" in damaged.text
    assert not messages[0].malformed and not messages[2].malformed


def test_fetch_goes_in_bounded_batches_and_skips_vanished_uids(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"n{i}")) for i in range(7)]
    mail_user.expunge("INBOX", [uids[3]])
    mail = EmailManager(connection, batch_size=3)
    mail.select_folder("INBOX")
    before = connection.commands_sent
    fetched = [m.uid for m in mail.fetch(uids)]
    assert fetched == uids[:3] + uids[4:]
    assert connection.commands_sent - before == 3


def test_raw_is_the_exact_source_and_reading_leaves_mail_unseen(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    raw = make_message(subject="exact bytes")
    uid = mail_user.append("INBOX", raw)
    mail = EmailManager(connection)
    mail.select_folder("INBOX")
    assert b"".join(mail.source_chunks(uid, 1 << 20) or []) == raw
    list(mail.fetch([uid]))
    assert "\\Seen" not in mail_user.flags("INBOX")[uid]
    assert mail.source_chunks(uid + 100, 1 << 20) is None
