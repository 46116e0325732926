"""A resync of a mailbox the server did not change still finishes what earlier runs left."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, Folder
from app.db.repositories.folders import unlink_uids
from app.sync.folder_settings import FolderSyncSetting, save_folder_settings
from app.sync.service import SyncResult, sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count, folder_row, server_uids, stored_uids

RECENT = datetime.now(UTC) - timedelta(days=30)


def run(engine: Engine, mailbox_id: int, settings: Settings) -> SyncResult:
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None, "the lease was free"
    assert result.complete
    return result


def leave_as_a_run_that_died_after_an_expunge(
    engine: Engine, mail_user: MailUser, mailbox_id: int, uid: int
) -> None:
    """Store what a run commits before its last transaction when `uid` left INBOX.

    It unlinked the message and checkpointed the folder at the server's new state,
    then stopped before deleting the email no folder held any more.
    """
    mail_user.expunge("INBOX", [uid])
    client = mail_user.client()
    try:
        status = client.folder_status("INBOX", [b"MESSAGES", b"HIGHESTMODSEQ"])
    finally:
        client.logout()
    with session_scope(engine) as session:
        inbox = session.exec(
            select(Folder).where(Folder.mailbox_id == mailbox_id, Folder.full_name == "INBOX")
        ).one()
        assert inbox.id is not None
        unlink_uids(session, inbox.id, [uid])
        inbox.message_count = status[b"MESSAGES"]
        inbox.highestmodseq = status[b"HIGHESTMODSEQ"]


def test_an_email_an_interrupted_run_left_in_no_folder_goes_at_the_next_run(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT) for n in range(3)]
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    leave_as_a_run_that_died_after_an_expunge(engine, mail_user, mailbox_id, uids[1])
    assert email_count(engine, mailbox_id) == 3

    with caplog.at_level(logging.DEBUG, logger="app.imap.connection"):
        run(engine, mailbox_id, settings)

    commands = {r.command for r in caplog.records if r.getMessage() == "imap.command"}  # type: ignore[attr-defined]
    assert not commands & {"SELECT", "EXAMINE"}, "the server had nothing new for this run"
    assert stored_uids(engine, mailbox_id) == server_uids(mail_user, ["INBOX"])
    with session_scope(engine) as session:
        subjects = session.exec(select(Email.subject).where(Email.mailbox_id == mailbox_id)).all()
    assert set(subjects) == {"m0", "m2"}
    assert email_count(engine, mailbox_id) == 2


def test_a_folder_enabled_since_the_last_run_is_synced_though_the_server_changed_nothing(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.create_folder("Projects")
    [uid] = [mail_user.append("Projects", make_message(subject="plan"), date=RECENT)]
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    assert stored_uids(engine, mailbox_id) == {}
    projects = folder_row(engine, mailbox_id, "Projects")
    assert projects is not None and projects.id is not None
    save_folder_settings(engine, settings, mailbox_id, [FolderSyncSetting(projects.id, True)])

    result = run(engine, mailbox_id, settings)

    assert stored_uids(engine, mailbox_id) == {"Projects": {uid}}
    assert result.counts.new == 1
