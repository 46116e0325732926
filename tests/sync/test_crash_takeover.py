"""Back within seconds after a crash: a killed sync's lease is taken over at once on its own
machine, a live sync keeps its short lease alive with a heartbeat, and a holder on another
machine is waited for only until its lease expires."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, SyncRunStatus, utcnow
from app.db.repositories.mailboxes import acquire_lease
from app.sync.folder_sync import SyncProgress
from app.sync.holder import holder_is_gone, worker_identity
from app.sync.service import SyncResult, sync_mailbox
from tests.support.cli import start_imap_bridge
from tests.support.crash_checks import kill_when
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import RECENT, append_many, make_message
from tests.support.snapshot import announced_ids, stored_count, stored_uids
from tests.support.worker_process import enqueue, wait_until, worker_process

SHORT_LEASE = 3  # seconds; the heartbeat renews it every second
SECONDS = 30  # what "within seconds" may take on a loaded 2-core machine
# An identity in this module's format, of a process on another machine (another boot).
ELSEWHERE = "other-host:4242:0badb007.4026531836:123456:abcdef01"


def start_sync(settings: Settings, workdir: Path, mailbox_id: int) -> subprocess.Popen[str]:
    """`imap-bridge sync --mailbox ID` in a process of its own, configured by the environment."""
    return start_imap_bridge(
        settings, workdir, "sync", "--mailbox", str(mailbox_id), SYNC_BATCH_SIZE="10"
    )


def lease_owner(engine: Engine, mailbox_id: int) -> str | None:
    with session_scope(engine) as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox.lease_owner


def take(engine: Engine, mailbox_id: int, owner: str, seconds: float) -> bool:
    with session_scope(engine) as session:
        return acquire_lease(session, mailbox_id, owner, utcnow(), timedelta(seconds=seconds))


def test_a_dead_holder_on_this_machine_is_told_apart_from_a_live_or_foreign_one() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from app.sync.holder import worker_identity;"
            " print(worker_identity(), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    identity = child.stdout.readline().strip()
    host, pid, machine, start, suffix = identity.split(":")
    assert int(pid) == child.pid

    assert not holder_is_gone(identity), "a live holder was taken for dead"
    reused = ":".join([host, pid, machine, str(int(start) + 1), suffix])
    assert holder_is_gone(reused), "a reused pid was taken for the holder"
    assert not holder_is_gone(ELSEWHERE), "a holder on another machine was taken for dead"
    assert not holder_is_gone("cron-sync"), "a holder of unknown format was taken for dead"
    assert not holder_is_gone(worker_identity()), "this very process was taken for dead"

    child.kill()
    deadline = time.monotonic() + 10
    while not holder_is_gone(identity):  # a zombie until reaped: gone all the same
        assert time.monotonic() < deadline, "a killed, unreaped holder was taken for alive"
        time.sleep(0.01)
    child.wait()
    assert holder_is_gone(identity), "a killed holder was taken for alive"


def test_a_sync_killed_mid_run_is_finished_by_the_next_at_once(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    """SIGKILL `imap-bridge sync` in the middle of a first sync: the next one, started right
    away, takes the dead run's lease over, finishes the mailbox and announces the mail that
    arrived meanwhile, in seconds rather than after the lease's length."""
    inbox = append_many(mail_user, "INBOX", "in", 300, heavy=range(0, 300, 3))
    mailbox_id = add_mailbox(mail_user)
    first = start_sync(settings, tmp_path, mailbox_id)
    kill_when(first, lambda: stored_count(engine, mailbox_id) >= 20)
    assert lease_owner(engine, mailbox_id) is not None, "the killed sync gave its lease back"
    mail_user.append("INBOX", make_message(subject="after the crash"), date=RECENT)
    killed_at = time.monotonic()

    second = start_sync(settings, tmp_path, mailbox_id)
    out, err = second.communicate(timeout=120)
    took = time.monotonic() - killed_at

    assert "skipped, another worker is syncing it" not in out, "the dead sync's lease blocked it"
    assert second.returncode == 0, f"{out}{err}"
    assert stored_uids(engine, mailbox_id)["INBOX"] == {*inbox, max(inbox) + 1}
    assert len(announced_ids(engine, mailbox_id)) == 1, "the new mail was not announced"
    assert took < 60, f"the mailbox was back after {took:.0f} s"
    assert lease_owner(engine, mailbox_id) is None


def test_a_worker_killed_mid_sync_is_replaced_within_its_lease(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    tmp_path: Path,
) -> None:
    """SIGKILL `imap-bridge worker` in the middle of a first sync: the job it was running
    goes to the next worker once its short in-progress mark lapses (not after arq's ten
    minutes), which takes the dead run's lease over and announces the new mail."""
    append_many(mail_user, "INBOX", "in", 300, heavy=range(0, 300, 3))
    mailbox_id = add_mailbox(mail_user)
    environment = {"SYNC_LEASE_SECONDS": str(SHORT_LEASE), "SYNC_BATCH_SIZE": "10"}
    with worker_process(settings, tmp_path, environment=environment) as first:
        enqueue(settings, mailbox_id)
        wait_until(lambda: stored_count(engine, mailbox_id) >= 20, 60, "the first sync stores")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    mail_user.append("INBOX", make_message(subject="after the crash"), date=RECENT)
    killed_at = time.monotonic()

    (tmp_path / "second").mkdir()
    with worker_process(settings, tmp_path / "second", environment=environment) as second:
        wait_until(
            lambda: len(announced_ids(engine, mailbox_id)) == 1,
            SECONDS,
            f"the new mail announced after the crash; the second worker said:\n{second.log}",
        )
    took = time.monotonic() - killed_at
    print(f"\nSIGKILL of a worker mid-sync -> email.received: {took:.1f} s")


def test_a_sync_longer_than_its_lease_keeps_it_while_it_runs(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    """The heartbeat renews a short lease while the run is busy elsewhere (here: stalled
    after its first batch, as in a long FETCH): nobody takes the mailbox meanwhile."""
    append_many(mail_user, "INBOX", "in", 60)
    mailbox_id = add_mailbox(mail_user)
    settings = settings.model_copy(
        update={"sync_lease_seconds": SHORT_LEASE, "sync_batch_size": 20}
    )
    stalled, wake_up = threading.Event(), threading.Event()
    outcome: list[SyncResult | None] = []

    def stall_after_first_batch(_: SyncProgress) -> None:
        if not stalled.is_set():
            stalled.set()
            wake_up.wait(timeout=60)

    thread = threading.Thread(
        target=lambda: outcome.append(
            sync_mailbox(engine, mailbox_id, settings, progress=stall_after_first_batch)
        )
    )
    thread.start()
    try:
        assert stalled.wait(timeout=30), "the sync never stored a batch"
        stalled_until = time.monotonic() + 3 * SHORT_LEASE
        while time.monotonic() < stalled_until:
            assert not take(engine, mailbox_id, ELSEWHERE, SHORT_LEASE), (
                "the mailbox was taken from a sync that was still running"
            )
            time.sleep(0.2)
    finally:
        wake_up.set()
        thread.join(timeout=60)

    [result] = outcome
    assert result is not None
    assert (result.status, result.complete) == (SyncRunStatus.SUCCEEDED, True)
    assert result.counts.new == 60


def test_a_holder_on_another_machine_is_waited_for_until_its_lease_expires(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.append("INBOX", make_message(subject="waiting"), date=RECENT)
    mailbox_id = add_mailbox(mail_user)
    settings = settings.model_copy(update={"sync_lease_seconds": SHORT_LEASE})
    assert take(engine, mailbox_id, ELSEWHERE, SHORT_LEASE)
    expires = time.monotonic() + SHORT_LEASE

    assert sync_mailbox(engine, mailbox_id, settings) is None, "a foreign live lease was taken"
    time.sleep(max(0.0, expires - time.monotonic()) + 0.5)
    result = sync_mailbox(engine, mailbox_id, settings)
    assert result is not None, "an expired lease still blocked the mailbox"
    assert result.status is SyncRunStatus.SUCCEEDED
    assert lease_owner(engine, mailbox_id) is None
