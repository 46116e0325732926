"""The demo mailbox holds what `make demo` promises: eighteen months of mail in four folders,
conversations threaded by their headers, attachments, subjects beyond ASCII."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from app.demo.mail import DemoMail, DemoMessage

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def parsed(message: DemoMessage) -> EmailMessage:
    result = message_from_bytes(message.raw, policy=default)
    assert isinstance(result, EmailMessage)
    return result


def test_the_history_spans_eighteen_months_in_four_folders() -> None:
    history = DemoMail(NOW).history
    dates = [message.date for message in history]
    folders = Counter(message.folder for message in history)

    assert 250 <= len(history) <= 400, len(history)
    assert min(dates) < NOW - timedelta(days=500), min(dates)
    assert max(dates) <= NOW
    assert set(folders) == {"INBOX", "Sent", "Archive", "Newsletters"}, folders
    older = sum(
        1 for m in history if m.folder in ("INBOX", "Sent") and m.date < NOW - timedelta(days=365)
    )
    assert older > 20, "the one-year sync window must leave some INBOX and Sent mail out"


def test_replies_point_at_messages_of_the_history() -> None:
    history = [parsed(message) for message in DemoMail(NOW).history]
    ids = {message["Message-ID"] for message in history}
    replies = [message for message in history if message["In-Reply-To"]]

    assert len(replies) > 50, len(replies)
    for reply in replies:
        assert reply["In-Reply-To"] in ids
        assert reply["References"].split()[-1] == reply["In-Reply-To"]
        assert reply["Subject"].startswith("Re: ")


def test_the_history_has_attachments_and_subjects_beyond_ascii() -> None:
    history = [parsed(message) for message in DemoMail(NOW).history]
    attachments = Counter(
        part.get_content_type() for message in history for part in message.iter_attachments()
    )
    subjects = {str(message["Subject"]) for message in history}

    assert {"application/pdf", "image/png", "text/csv"} <= set(attachments), attachments
    assert any(not subject.isascii() for subject in subjects)
    assert "見積書の送付について" in subjects


def test_arrivals_are_new_inbox_mail_and_every_third_a_reply() -> None:
    mail = DemoMail(NOW)
    known = {parsed(message)["Message-ID"] for message in mail.history}
    arrivals = [mail.arrival(NOW + timedelta(seconds=20 * n)) for n in range(1, 7)]

    assert {message.folder for message in arrivals} == {"INBOX"}
    assert all(message.flags == () for message in arrivals), "new mail arrives unread"
    for position, message in enumerate(map(parsed, arrivals), 1):
        assert message["Message-ID"] not in known
        if position % 3 == 0:
            assert message["In-Reply-To"] in known, "a reply to a conversation the mailbox has"
        else:
            assert message["In-Reply-To"] is None
        known.add(message["Message-ID"])
