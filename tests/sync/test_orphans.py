"""An email no folder holds any more is deleted by a complete run, whatever left it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import session_scope
from app.db.migrate import alembic_config, upgrade_database
from app.db.models import Email, EmailFolder, Folder
from app.sync.folder_sync import ProgressCallback, SyncProgress
from app.sync.service import SyncResult, sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message
from tests.support.snapshot import events_of

RECENT = datetime.now(UTC) - timedelta(days=30)


def run(
    engine: Engine, mailbox_id: int, settings: Settings, progress: ProgressCallback | None = None
) -> SyncResult:
    result = sync_mailbox(engine, mailbox_id, settings, progress=progress)
    assert result is not None, "the lease was free"
    assert result.complete
    return result


def stored_subjects(engine: Engine, mailbox_id: int) -> set[str | None]:
    """The subjects of every email of the mailbox, as the API lists them."""
    with session_scope(engine) as session:
        return set(session.exec(select(Email.subject).where(Email.mailbox_id == mailbox_id)))


def subjects_in_no_folder(engine: Engine, mailbox_id: int) -> set[str | None]:
    linked = select(EmailFolder.email_id).where(col(EmailFolder.email_id) == Email.id)
    with session_scope(engine) as session:
        return set(
            session.exec(
                select(Email.subject).where(Email.mailbox_id == mailbox_id, ~linked.exists())
            )
        )


def test_mail_expunged_while_a_folder_grew_goes_at_the_next_run(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    """The run that unlinked it keeps it (it might have moved); the next one deletes it."""
    uids = [mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT) for n in range(3)]
    mail_user.append("Sent", make_message(subject="s0"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    mail_user.expunge("INBOX", [uids[1]])
    mail_user.append("Sent", make_message(subject="s1"), date=RECENT)
    delivered: list[int] = []

    def deliver_once_inbox_is_done(progress: SyncProgress) -> None:
        if progress.folder == "Sent" and not delivered:
            delivered.append(mail_user.append("INBOX", make_message(subject="m3"), date=RECENT))

    run(engine, mailbox_id, settings, progress=deliver_once_inbox_is_done)
    assert delivered, "the run stored new mail in Sent, after INBOX"
    assert subjects_in_no_folder(engine, mailbox_id) == {"m1"}, "it might have moved"

    run(engine, mailbox_id, settings)

    assert stored_subjects(engine, mailbox_id) == {"m0", "m2", "m3", "s0", "s1"}
    assert subjects_in_no_folder(engine, mailbox_id) == set()


def email_ids_by_subject(engine: Engine, mailbox_id: int, subject: str) -> list[int | None]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Email.id).where(Email.mailbox_id == mailbox_id, Email.subject == subject)
            )
        )


def test_mail_moved_into_the_folder_still_selected_keeps_its_email(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    """A move into the last folder synced is seen although the run still has it selected."""
    moved = make_message(subject="m1")
    uid = mail_user.append("INBOX", moved, date=RECENT)
    mail_user.append("Sent", make_message(subject="s0"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    [email_id] = email_ids_by_subject(engine, mailbox_id, "m1")
    mail_user.expunge("INBOX", [uid])
    mail_user.append("Sent", make_message(subject="s1"), date=RECENT)
    arrived: list[int] = []

    def move_in_once_sent_is_selected(progress: SyncProgress) -> None:
        if progress.folder == "Sent" and not arrived:
            arrived.append(mail_user.append("Sent", moved, date=RECENT))

    run(engine, mailbox_id, settings, progress=move_in_once_sent_is_selected)
    assert arrived, "the run stored new mail in Sent, the last folder it syncs"
    assert subjects_in_no_folder(engine, mailbox_id) == {"m1"}, "it might have moved"

    run(engine, mailbox_id, settings)

    assert email_ids_by_subject(engine, mailbox_id, "m1") == [email_id]
    assert subjects_in_no_folder(engine, mailbox_id) == set()
    announced = [
        announced_id
        for event in events_of(engine, mailbox_id, "email.received")
        for announced_id in event["email_ids"]
    ]
    assert email_id not in announced, "a move is not new mail"


def test_mail_in_no_folder_from_before_the_upgrade_goes_at_the_first_run_after_it(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    database_url: str,
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT) for n in range(3)]
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    mail_user.expunge("INBOX", [uids[1]])
    with session_scope(engine) as session:  # as a run cut short by an older version left it
        inbox = session.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.full_name == "INBOX")
        ).one()
        session.execute(
            sa.delete(EmailFolder).where(
                col(EmailFolder.folder_id) == inbox.id, col(EmailFolder.uid) == uids[1]
            )
        )
    engine.dispose()
    command.downgrade(alembic_config(database_url), "0004")
    upgrade_database(database_url)

    run(engine, mailbox_id, settings)

    assert stored_subjects(engine, mailbox_id) == {"m0", "m2"}
