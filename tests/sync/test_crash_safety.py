"""A sync killed with SIGKILL at any point loses nothing and stores nothing twice.

The sync runs in a process of its own (`tests.support.sync_driver`) against the real Dovecot
and database. The test watches the database, kills the process at chosen points, checks
that what the crash left is exactly what the folder marks say is stored, then lets a run
complete and compares the result with the server.
"""

from __future__ import annotations

import subprocess

from sqlalchemy import Engine

from app.config import Settings
from tests.support.crash_checks import (
    Condition,
    assert_announced,
    assert_complete,
    assert_consistent,
    assert_dead_lease_left,
    kill_when,
    run_to_completion,
)
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import append_many, expected_message_ids
from tests.support.snapshot import (
    announced_ids,
    inbox_modseq,
    message_ids,
    stored_count,
)
from tests.support.sync_driver import Drivers

BATCH_SIZE = 20
FIRST_INBOX = 600
FIRST_SENT = 100
NEW_INBOX = 120
NEW_SENT = 10


def test_sigkill_mid_batch_then_rerun_loses_and_duplicates_nothing(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    settings = settings.model_copy(update={"sync_batch_size": BATCH_SIZE})
    server: dict[str, set[int]] = {}

    def stored_at_least(count: int) -> Condition:
        return lambda: stored_count(engine, mailbox_id) >= count

    def inbox_started() -> bool:
        return inbox_modseq(engine, mailbox_id) is not None  # marks fixed, first batch in flight

    def kill_and_check(process: subprocess.Popen[str], reached: Condition) -> int:
        """Kill the sync at `reached`, check what it left and return how much it stored."""
        kill_when(process, reached)
        assert_consistent(engine, mailbox_id, server)
        assert_dead_lease_left(engine, mailbox_id)
        return stored_count(engine, mailbox_id)

    first_sync_kills = [
        inbox_started,
        stored_at_least(FIRST_INBOX // 2),
        stored_at_least(FIRST_INBOX + BATCH_SIZE),  # in Sent
    ]
    killed_runs = len(first_sync_kills) + 2  # and two during the incremental sync
    with Drivers(settings, [[str(mailbox_id)]] * killed_runs) as drivers:
        newest = range(FIRST_INBOX - BATCH_SIZE, FIRST_INBOX)  # a first sync fetches these first
        server["INBOX"] = set(append_many(mail_user, "INBOX", "in", FIRST_INBOX, heavy=newest))
        server["Sent"] = set(append_many(mail_user, "Sent", "out", FIRST_SENT))
        left = [kill_and_check(drivers.start_next(), reached) for reached in first_sync_kills]
        assert left[0] == 0, "killed inside the first batch"
        assert 0 < left[1] < FIRST_INBOX
        assert FIRST_INBOX < left[2] < FIRST_INBOX + FIRST_SENT, "killed inside Sent"
        run_to_completion(engine, settings, mailbox_id)

        assert_complete(engine, mailbox_id, mail_user)
        assert message_ids(engine, mailbox_id).keys() == (
            expected_message_ids("in", FIRST_INBOX) | expected_message_ids("out", FIRST_SENT)
        )
        assert announced_ids(engine, mailbox_id) == []  # a first sync announces nothing

        checkpoint_modseq = inbox_modseq(engine, mailbox_id)
        oldest = range(BATCH_SIZE)  # new mail is fetched oldest first
        new_inbox = append_many(mail_user, "INBOX", "new", NEW_INBOX, heavy=oldest)
        new_sent = append_many(mail_user, "Sent", "new-out", NEW_SENT)
        server["INBOX"] |= set(new_inbox)
        server["Sent"] |= set(new_sent)
        before = stored_count(engine, mailbox_id)

        def new_mail_started() -> bool:
            return inbox_modseq(engine, mailbox_id) != checkpoint_modseq  # flags applied

        # Inside the first batch of new mail, then in the middle of it; what a killed run
        # committed, it announced (the outbox promise), and nothing else.
        assert kill_and_check(drivers.start_next(), new_mail_started) == before
        assert announced_ids(engine, mailbox_id) == []
        halfway = kill_and_check(drivers.start_next(), stored_at_least(before + 2 * BATCH_SIZE))
        assert before < halfway < before + NEW_INBOX
        assert_announced(engine, mailbox_id, expected_message_ids("new", NEW_INBOX))
    run_to_completion(engine, settings, mailbox_id)

    assert_complete(engine, mailbox_id, mail_user)
    new = expected_message_ids("new", NEW_INBOX) | expected_message_ids("new-out", NEW_SENT)
    assert_announced(engine, mailbox_id, new)  # all of them, as all are stored
