"""The server changes under the sync: no run crashes (a failed one is fine) and the next
run(s) leave the database equal to the server.

Changes land mid-run through the sync's progress callback, which the engine calls after
each stored batch: the change then hits the next SELECT or FETCH of the same run.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine
from sqlmodel import select

from app.config import Settings
from app.db import session_scope
from app.db.models import Email, SyncRunStatus
from app.sync.folder_sync import SyncProgress
from app.sync.service import SyncResult
from tests.support.crash_checks import enable_folder, once
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import append_many, expected_message_ids
from tests.support.mirror import (
    NETWORK_REASONS,
    assert_failed_on_network,
    assert_mirrors_server,
    stored_links,
    sync,
    sync_to_completion,
)
from tests.support.snapshot import announced_ids, email_ids_of, events_of, folder_row

KICK_EVERY = 0.5


def assert_survived(engine: Engine, mailbox_id: int, result: SyncResult) -> None:
    """The run either succeeded or failed as a network failure: never a crash or a blame."""
    if result.status is SyncRunStatus.FAILED:
        assert_failed_on_network(engine, mailbox_id, result)
    else:
        assert result.status is SyncRunStatus.SUCCEEDED


def email_ids(engine: Engine, mailbox_id: int) -> set[int]:
    with session_scope(engine) as session:
        found = session.exec(select(Email.id).where(Email.mailbox_id == mailbox_id))
        return {email_id for email_id in found if email_id is not None}


def test_a_uidvalidity_reset_during_a_sync_relinks_old_mail_and_announces_none_of_it(
    engine: Engine, fault_settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    append_many(mail_user, "INBOX", "in", 200)
    append_many(mail_user, "Sent", "out", 20)
    mailbox_id = add_mailbox(mail_user)
    sync_to_completion(engine, fault_settings, mailbox_id)
    old_mail = email_ids(engine, mailbox_id)
    append_many(mail_user, "INBOX", "new", 100)
    renumbered = mail_user.uidvalidity("INBOX") + 1000

    result = sync(
        engine,
        fault_settings,
        mailbox_id,
        progress=once(lambda: mail_user.set_uidvalidity("INBOX", renumbered)),
    )

    assert_survived(engine, mailbox_id, result)
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)
    assert old_mail <= email_ids(engine, mailbox_id), "old mail relinked, not stored again"
    [reset] = events_of(engine, mailbox_id, "folder.reset")
    assert (reset["full_name"], reset["new_uidvalidity"]) == ("INBOX", renumbered)
    announced = announced_ids(engine, mailbox_id)
    assert len(announced) == len(set(announced))
    assert set(announced) <= set(
        email_ids_of(engine, mailbox_id, expected_message_ids("new", 100))
    ), "old mail announced as new"


def test_a_folder_renamed_during_a_sync_keeps_its_mail_under_the_new_name(
    engine: Engine, fault_settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.create_folder("Projects")
    append_many(mail_user, "Projects", "project", 30)
    append_many(mail_user, "INBOX", "in", 20)
    mailbox_id = add_mailbox(mail_user)
    sync_to_completion(engine, fault_settings, mailbox_id)
    enable_folder(engine, fault_settings, mailbox_id, "Projects")
    sync_to_completion(engine, fault_settings, mailbox_id)
    project_mail = email_ids(engine, mailbox_id)
    append_many(mail_user, "INBOX", "new", 100)
    append_many(mail_user, "Projects", "project-new", 10)

    result = sync(
        engine,
        fault_settings,
        mailbox_id,
        progress=once(lambda: mail_user.rename_folder("Projects", "Clients")),
    )

    assert_survived(engine, mailbox_id, result)
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user, ["INBOX", "Sent", "Clients"])
    assert project_mail <= email_ids(engine, mailbox_id), "the folder's mail kept, not refetched"
    renamed = events_of(engine, mailbox_id, "folder.renamed")
    assert [(e["old_name"], e["new_name"]) for e in renamed] == [("Projects", "Clients")]
    assert folder_row(engine, mailbox_id, "Projects") is None


def test_a_folder_deleted_before_it_is_selected_is_kept_as_outdated_and_the_rest_syncs(
    engine: Engine, fault_settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.create_folder("Projects")
    append_many(mail_user, "Projects", "project", 30)
    append_many(mail_user, "INBOX", "in", 20)
    mailbox_id = add_mailbox(mail_user)
    sync_to_completion(engine, fault_settings, mailbox_id)
    enable_folder(engine, fault_settings, mailbox_id, "Projects")
    sync_to_completion(engine, fault_settings, mailbox_id)
    append_many(mail_user, "INBOX", "new", 100)
    append_many(mail_user, "Projects", "project-new", 10)

    result = sync(
        engine,
        fault_settings,
        mailbox_id,
        progress=once(lambda: mail_user.delete_folder("Projects")),
    )

    assert_survived(engine, mailbox_id, result)
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)
    projects = folder_row(engine, mailbox_id, "Projects")
    assert projects is not None
    assert projects.outdated_since is not None
    [deleted] = events_of(engine, mailbox_id, "folder.deleted")
    assert (deleted["full_name"], deleted["kept"]) == ("Projects", True)


def test_mail_expunged_between_search_and_fetch_and_between_runs_is_not_stored(
    engine: Engine, fault_settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    uids = append_many(mail_user, "INBOX", "in", 200)
    mailbox_id = add_mailbox(mail_user)
    # A first sync fetches newest first: after its first batch, the oldest are still to come.
    not_yet_fetched = uids[:20] + uids[100:110]

    result = sync(
        engine,
        fault_settings,
        mailbox_id,
        progress=once(lambda: mail_user.expunge("INBOX", not_yet_fetched)),
    )

    assert_survived(engine, mailbox_id, result)
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)
    stored = [uid for (_, uid) in stored_links(engine, mailbox_id)]
    mail_user.expunge("INBOX", stored[::7])
    mail_user.add_flags("INBOX", stored[1::7], ["\\Seen"])
    sync_to_completion(engine, fault_settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)


def test_sessions_kicked_every_half_second_fail_runs_that_resume_and_converge(
    engine: Engine, fault_settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    append_many(mail_user, "INBOX", "in", 400)
    append_many(mail_user, "Sent", "out", 40)
    mailbox_id = add_mailbox(mail_user)
    settings = fault_settings.model_copy(update={"sync_batch_size": 20})
    stop = threading.Event()

    def kick_until_stopped() -> None:
        while not stop.wait(KICK_EVERY):
            mail_user.kick()

    def slow_batches(_: SyncProgress) -> None:
        stop.wait(0.05)  # stretch the run over several kicks

    kicker = threading.Thread(target=kick_until_stopped)
    kicker.start()
    results: list[SyncResult] = []
    try:
        while len(results) < 8 and not (results and results[-1].complete):
            results.append(sync(engine, settings, mailbox_id, progress=slow_batches))
    finally:
        stop.set()
        kicker.join(timeout=10)

    assert any(result.error_code in NETWORK_REASONS for result in results), "no kick landed"
    for result in results:
        assert_survived(engine, mailbox_id, result)
    sync_to_completion(engine, settings, mailbox_id)
    assert_mirrors_server(engine, mailbox_id, mail_user)
