"""Folder sync settings: saved together, folders refreshed at once, mail at the next run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import Folder, Mailbox, SyncRun, SyncRunStatus, utcnow
from app.sync.errors import UnknownFoldersError
from app.sync.folder_settings import FolderSyncSetting, save_folder_settings
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory, id_of
from tests.support.mailgen import make_message
from tests.support.snapshot import email_count, folder_row, stored_uids

RECENT = datetime.now(UTC) - timedelta(days=3)


def discovered_folder(engine: Engine, mailbox_id: int, full_name: str) -> Folder:
    folder = folder_row(engine, mailbox_id, full_name)
    assert folder is not None, f"{full_name} was listed"
    return folder


def run_count(engine: Engine, mailbox_id: int) -> int:
    with session_scope(engine) as session:
        return len(session.exec(select(SyncRun.id).where(SyncRun.mailbox_id == mailbox_id)).all())


def test_enabling_a_folder_refreshes_folders_only_and_its_mail_comes_with_the_next_run(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    archived = mail_user.append("Archive", make_message(subject="archived"), date=RECENT)
    # In a backoff after failed logins: the next run is a day away.
    mailbox_id = add_mailbox(mail_user, next_sync_at=utcnow() + timedelta(days=1))
    assert sync_mailbox(engine, mailbox_id, settings, folders_only=True) is not None
    archive = discovered_folder(engine, mailbox_id, "Archive")
    assert not archive.sync_enabled
    mail_user.create_folder("Projects")  # only a folder refresh can know about it

    result = save_folder_settings(
        engine, settings, mailbox_id, [FolderSyncSetting(id_of(archive), sync_enabled=True)]
    )

    assert result is not None
    assert result.status is SyncRunStatus.SUCCEEDED
    assert (result.counts.folders_added, result.counts.new, result.counts.bytes) == (1, 0, 0)
    assert discovered_folder(engine, mailbox_id, "Archive").sync_enabled
    assert folder_row(engine, mailbox_id, "Projects") is not None
    assert email_count(engine, mailbox_id) == 0
    with session_scope(engine) as session:
        run = session.get(SyncRun, result.run_id)
        mailbox = session.get(Mailbox, mailbox_id)
        assert run is not None
        assert run.folders_only
        assert mailbox is not None
        assert mailbox.next_sync_at is not None
        assert mailbox.next_sync_at <= utcnow() + timedelta(minutes=settings.sync_interval_minutes)

    assert sync_mailbox(engine, mailbox_id, settings) is not None
    assert stored_uids(engine, mailbox_id) == {"Archive": {archived}}


def test_a_folder_of_another_mailbox_is_refused_and_nothing_is_saved(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    other_id = add_mailbox(mail_user, email_address="other@example.com")
    for each in (mailbox_id, other_id):
        assert sync_mailbox(engine, each, settings, folders_only=True) is not None
    own = discovered_folder(engine, mailbox_id, "Archive")
    foreign = discovered_folder(engine, other_id, "Archive")

    with pytest.raises(UnknownFoldersError) as refused:
        save_folder_settings(
            engine,
            settings,
            mailbox_id,
            [
                FolderSyncSetting(id_of(own), sync_enabled=True),
                FolderSyncSetting(id_of(foreign), sync_enabled=True),
            ],
        )

    assert refused.value.folder_ids == [foreign.id]
    assert str(foreign.id) in str(refused.value)
    assert not discovered_folder(engine, mailbox_id, "Archive").sync_enabled
    assert not discovered_folder(engine, other_id, "Archive").sync_enabled
    assert run_count(engine, mailbox_id) == 1, "no folder sync ran"
