"""The sync engine against the real Dovecot, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, Folder, Mailbox, SyncRun, SyncRunStatus
from app.sync.service import SyncResult, sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import make_message
from tests.support.snapshot import (
    email_count,
    events_of,
    folder_row,
    server_uids,
    stored_subjects,
    stored_uids,
)

NOW = datetime.now(UTC)
RECENT = NOW - timedelta(days=30)
OLD = NOW - timedelta(days=400)


def run(engine: Engine, mailbox_id: int, settings: Settings, **options: object) -> SyncResult:
    result = sync_mailbox(engine, mailbox_id, settings, **options)  # type: ignore[arg-type]
    assert result is not None, "the lease was free"
    return result


def test_first_sync_takes_the_last_year_of_inbox_and_sent_only(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    recent_inbox = mail_user.append("INBOX", make_message(subject="new in"), date=RECENT)
    mail_user.append("INBOX", make_message(subject="old in"), date=OLD)
    recent_sent = mail_user.append("Sent", make_message(subject="new out"), date=RECENT)
    mail_user.append("Sent", make_message(subject="old out"), date=OLD)
    mail_user.append("Archive", make_message(subject="archived"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)

    result = run(engine, mailbox_id, settings)

    assert result.status is SyncRunStatus.SUCCEEDED
    assert result.complete
    assert stored_uids(engine, mailbox_id) == {"INBOX": {recent_inbox}, "Sent": {recent_sent}}
    assert stored_subjects(engine, mailbox_id, "INBOX") == {recent_inbox: "new in"}
    assert result.counts.new == 2
    archive = folder_row(engine, mailbox_id, "Archive")
    assert archive is not None
    assert not archive.sync_enabled
    assert events_of(engine, mailbox_id, "email.received") == []  # a first sync announces nothing


def test_unchanged_mailbox_costs_one_listing_and_no_fetch(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for n in range(3):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    mail_user.append("Sent", make_message(), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)

    with caplog.at_level(logging.DEBUG, logger="app.imap.connection"):
        result = run(engine, mailbox_id, settings)

    commands = [r.command for r in caplog.records if r.getMessage() == "imap.command"]  # type: ignore[attr-defined]
    assert (result.counts.new, result.counts.bytes) == (0, 0)
    assert "SELECT" not in commands
    assert "EXAMINE" not in commands
    assert "FETCH" not in commands
    assert "UID" not in commands
    assert commands.count("LIST") == 1


def test_changes_on_the_server_are_mirrored(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uids = [mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT) for n in range(5)]
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)

    arrived = mail_user.append("INBOX", make_message(subject="arrived"), date=NOW)
    mail_user.add_flags("INBOX", [uids[0]], ["\\Seen", "\\Flagged"])
    mail_user.expunge("INBOX", [uids[1]])
    [moved] = mail_user.move("INBOX", [uids[2]], "Sent")
    result = run(engine, mailbox_id, settings)

    assert stored_uids(engine, mailbox_id) == server_uids(mail_user, ["INBOX", "Sent"])
    assert stored_uids(engine, mailbox_id) == {
        "INBOX": {uids[0], uids[3], uids[4], arrived},
        "Sent": {moved},
    }
    assert result.counts.new == 1  # the moved message is linked, not stored again
    assert result.counts.expunged == 2
    assert result.counts.flags_changed == 1
    assert email_count(engine, mailbox_id) == 5
    with session_scope(engine) as session:
        seen = session.exec(select(Email.subject).where(Email.seen, Email.flagged)).all()
    assert seen == ["m0"]
    [received] = events_of(engine, mailbox_id, "email.received")
    assert len(received["email_ids"]) == 1


def test_vanished_folders_are_deleted_when_empty_and_kept_with_mail(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.create_folder("Empty")
    mail_user.create_folder("Gesendet")  # a sent folder by name: enabled for sync
    mail_user.append("Gesendet", make_message(), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    assert stored_uids(engine, mailbox_id).keys() == {"Gesendet"}

    mail_user.delete_folder("Empty")
    mail_user.delete_folder("Gesendet")
    result = run(engine, mailbox_id, settings)

    assert folder_row(engine, mailbox_id, "Empty") is None
    kept = folder_row(engine, mailbox_id, "Gesendet")
    assert kept is not None
    assert kept.outdated_since is not None
    assert stored_uids(engine, mailbox_id).keys() == {"Gesendet"}
    assert result.counts.folders_removed == 2
    deleted = events_of(engine, mailbox_id, "folder.deleted")
    assert sorted((e["full_name"], e["kept"]) for e in deleted) == [
        ("Empty", False),
        ("Gesendet", True),
    ]
    run(engine, mailbox_id, settings)
    assert len(events_of(engine, mailbox_id, "folder.deleted")) == 2  # reported once


def test_uidvalidity_reset_relinks_without_duplicates(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    for n in range(4):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    mail_user.append("INBOX", make_message(subject="no id", message_id=None), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)
    before = email_count(engine, mailbox_id)

    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 1000)
    result = run(engine, mailbox_id, settings)

    assert email_count(engine, mailbox_id) == before == 5
    assert stored_uids(engine, mailbox_id) == server_uids(mail_user, ["INBOX"])
    assert events_of(engine, mailbox_id, "email.received") == []
    assert len(events_of(engine, mailbox_id, "folder.reset")) == 1
    assert result.counts.new == 0


def test_mail_that_arrives_during_a_uidvalidity_reset_is_announced_alone(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    for n in range(3):
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings)

    arrived = mail_user.append("INBOX", make_message(subject="during the reset"), date=NOW)
    mail_user.set_uidvalidity("INBOX", mail_user.uidvalidity("INBOX") + 1000)
    result = run(engine, mailbox_id, settings)

    assert result.counts.new == 1
    assert stored_uids(engine, mailbox_id) == server_uids(mail_user, ["INBOX"])
    announced = events_of(engine, mailbox_id, "email.received")
    assert len(announced) == 1
    with session_scope(engine) as session:
        subjects = [session.get_one(Email, i).subject for i in announced[0]["email_ids"]]
    assert subjects == ["during the reset"]
    assert arrived in stored_uids(engine, mailbox_id)["INBOX"]


def test_renamed_folder_keeps_its_mail_and_sync_flag(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.create_folder("Projects")
    uid = mail_user.append("Projects", make_message(subject="plan"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    run(engine, mailbox_id, settings, folders_only=True)
    with session_scope(engine) as session:
        projects = session.exec(select(Folder).where(Folder.full_name == "Projects")).one()
        projects.sync_enabled = True
        folder_id = projects.id
    run(engine, mailbox_id, settings)

    mail_user.rename_folder("Projects", "Work")
    run(engine, mailbox_id, settings)

    work = folder_row(engine, mailbox_id, "Work")
    assert work is not None
    assert (work.id, work.sync_enabled) == (folder_id, True)
    assert stored_uids(engine, mailbox_id) == {"Work": {uid}}
    assert events_of(engine, mailbox_id, "folder.renamed") == [
        {"folder_id": folder_id, "old_name": "Projects", "new_name": "Work"}
    ]


def test_first_sync_over_budget_fills_in_newest_first_across_runs(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uids = [
        mail_user.append("INBOX", make_message(subject=f"m{n}"), date=RECENT + timedelta(hours=n))
        for n in range(23)
    ]
    mailbox_id = add_mailbox(mail_user)
    tight = settings.model_copy(update={"sync_time_budget_seconds": 1e-9, "sync_batch_size": 5})

    first = run(engine, mailbox_id, tight)
    assert not first.complete
    assert stored_uids(engine, mailbox_id) == {"INBOX": set(uids[-5:])}

    runs = 1
    while not run(engine, mailbox_id, tight).complete:
        runs += 1
        assert runs < 10
    assert stored_uids(engine, mailbox_id) == {"INBOX": set(uids)}
    assert email_count(engine, mailbox_id) == 23


def test_wrong_password_is_reported_once_and_restored_once(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    good_password = mail_user.password
    mail_user.set_password("changed-on-the-server")

    for _ in range(2):
        failed = run(engine, mailbox_id, settings)
        assert (failed.status, failed.error_code) == (SyncRunStatus.FAILED, "auth_failed")
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.status == "auth_failed"
    assert len(events_of(engine, mailbox_id, "mailbox.credentials_invalid")) == 1

    mail_user.set_password(good_password)
    restored = run(engine, mailbox_id, settings)
    assert restored.status is SyncRunStatus.SUCCEEDED
    assert len(events_of(engine, mailbox_id, "mailbox.credentials_restored")) == 1
    assert len(events_of(engine, mailbox_id, "mailbox.credentials_invalid")) == 1


def retry_delay(engine: Engine, result: SyncResult) -> timedelta:
    """How long after the failed run ended the mailbox is due again."""
    with session_scope(engine) as session:
        failed = session.get(SyncRun, result.run_id)
        assert failed is not None
        assert failed.finished_at is not None
        mailbox = session.get(Mailbox, failed.mailbox_id)
        assert mailbox is not None
        assert mailbox.next_sync_at is not None
        return mailbox.next_sync_at - failed.finished_at


def test_failures_are_retried_sooner_when_transient_and_later_each_time_up_to_a_cap(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    settings = settings.model_copy(update={"sync_interval_minutes": 3})
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = add_mailbox(mail_user, email_address="down@example.com", port=closed_port)
    refused = add_mailbox(mail_user, email_address="locked@example.com")
    mail_user.set_password("not-the-stored-one")

    network = [retry_delay(engine, run(engine, unreachable, settings)) for _ in range(3)]
    credentials = [retry_delay(engine, run(engine, refused, settings)) for _ in range(2)]

    # One minute, doubling, never later than the schedule; a refused login waits for the
    # schedule, doubling: retrying it soon would only be refused again.
    assert network == [timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=3)]
    assert credentials == [timedelta(minutes=3), timedelta(minutes=6)]


def test_an_undecryptable_secret_fails_the_run_instead_of_leaving_it_running(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user, password_enc="gAAAAA-not-a-token")

    failed = run(engine, mailbox_id, settings)

    assert (failed.status, failed.error_code) == (SyncRunStatus.FAILED, "secret_undecryptable")
    [event] = events_of(engine, mailbox_id, "mailbox.sync_failed")
    assert event == {"error_code": "secret_undecryptable"}
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert mailbox.next_sync_at is not None
        assert mailbox.next_sync_at > datetime.now(UTC)


def test_a_run_left_running_by_a_dead_worker_is_closed_by_the_next_one(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    with session_scope(engine) as session:
        orphan = SyncRun(mailbox_id=mailbox_id, status=SyncRunStatus.RUNNING)
        session.add(orphan)
        session.flush()
        orphan_id = orphan.id

    assert run(engine, mailbox_id, settings).status is SyncRunStatus.SUCCEEDED

    with session_scope(engine) as session:
        closed = session.get(SyncRun, orphan_id)
        assert closed is not None
        assert (closed.status, closed.error_code) == (SyncRunStatus.FAILED, "interrupted")
