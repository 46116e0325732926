"""Which messages are one email: look-alikes never merge, copies never split."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import col, func, select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, EmailFolder
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import append_many, make_message
from tests.support.mirror import assert_mirrors_server, sync_to_completion

LOOK_ALIKES = 100
SENT_AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def links_per_email(engine: Engine, mailbox_id: int) -> list[int]:
    with session_scope(engine) as session:
        statement = (
            select(func.count())
            .select_from(EmailFolder)
            .join(Email, col(Email.id) == EmailFolder.email_id)
            .where(Email.mailbox_id == mailbox_id)
            .group_by(col(EmailFolder.email_id))
        )
        return sorted(session.exec(statement).all())


def identities(engine: Engine, mailbox_id: int) -> int:
    """Count the distinct deduplication keys of the mailbox's emails."""
    with session_scope(engine) as session:
        statement = select(func.count(func.distinct(Email.identity))).where(
            Email.mailbox_id == mailbox_id
        )
        return session.exec(statement).one()


def test_look_alike_messages_without_message_id_are_each_their_own_email(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    """Same sender, subject, date and size, no Message-ID: only the body tells them apart."""
    client = mail_user.client()
    try:
        client.multiappend(
            "INBOX",
            [
                make_message(
                    subject="Weekly report",
                    date=SENT_AT,
                    message_id=None,
                    text=f"Report number {n:03d}\n",
                )
                for n in range(LOOK_ALIKES)
            ],
        )
    finally:
        client.logout()
    mailbox_id = add_mailbox(mail_user)

    sync_to_completion(engine, settings, mailbox_id)
    sync_to_completion(engine, settings, mailbox_id)

    assert identities(engine, mailbox_id) == 1, "the premise: one identity key for all"
    assert links_per_email(engine, mailbox_id) == [1] * LOOK_ALIKES
    assert_mirrors_server(engine, mailbox_id, mail_user)
    # Relinking by identity after a UIDVALIDITY reset must not merge them either.
    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 1000)
    sync_to_completion(engine, settings, mailbox_id)
    assert links_per_email(engine, mailbox_id) == [1] * LOOK_ALIKES
    assert_mirrors_server(engine, mailbox_id, mail_user)


def test_a_message_copied_into_two_synced_folders_is_one_email_with_two_links(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    [before] = append_many(mail_user, "INBOX", "before", 1)
    mail_user.copy("INBOX", [before], "Sent")
    append_many(mail_user, "INBOX", "other", 5)
    mailbox_id = add_mailbox(mail_user)
    sync_to_completion(engine, settings, mailbox_id)
    [after] = append_many(mail_user, "INBOX", "after", 1)
    sync_to_completion(engine, settings, mailbox_id)
    mail_user.copy("INBOX", [after], "Sent")  # copied once the original is stored

    sync_to_completion(engine, settings, mailbox_id)

    assert links_per_email(engine, mailbox_id) == [1] * 5 + [2, 2]
    assert_mirrors_server(engine, mailbox_id, mail_user)
