"""SIGKILL a large first sync at 20 random points, rerun it, and lose or repeat nothing.

Each run is a process of its own (`tests.support.sync_driver`), killed at a random point
(seeded, replayable): a random delay after the run is recorded (lease taken), one delay
in each twentieth of LONGEST_DELAY, shuffled, so the early steps get their share; or,
when that comes first, a random moment after a random number of stored batches, so that
no run, however fast the machine, finishes the mailbox before the 20th kill. Just
before the kill the process is frozen and reports its threads' stacks, so the test knows what it
interrupted: login, the folder listing, a SEARCH, flags and expunges, a batch's header
lookup, FETCH or write, a checkpoint, the end of the run. A kill that lands after the
run finished does not count. New mail arrives in the middle, so runs also announce
mail, and a killed run must not announce it twice.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine
from sqlmodel import col, func, select

from app.config import Settings
from app.db import session_scope
from app.db.models import SyncRun, SyncRunStatus
from tests.support.crash_checks import (
    assert_announced,
    assert_complete,
    assert_consistent,
    run_to_completion,
)
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.mailgen import append_many, expected_message_ids
from tests.support.mirror import assert_mirrors_server, replayed_with, seed_from_environment
from tests.support.snapshot import inbox_modseq, message_ids, stored_count
from tests.support.sync_driver import DriverSeries, freeze_and_kill

KILLS = 20
MAX_ATTEMPTS = 40  # kills that land after a finished run are retried, not counted
LONGEST_DELAY = 1.0  # seconds from a run's start (lease taken) to its kill
MOST_BATCHES = 4  # stored by a run before its kill, at most (then up to LONGEST_EXTRA more)
LONGEST_EXTRA = 0.05  # seconds: about one batch on an idle machine
BATCH_SIZE = 50
FIRST_INBOX = 4000
FIRST_SENT = 2000
NEW_MAIL = 300  # arrives in INBOX after these kills, and after any run that finished
NEW_MAIL_AFTER_KILLS = (6, 13)
SEED_VARIABLE = "KILL_POINTS_SEED"

_BATCH_PHASES = {"batch: fetch", "batch: fetch while writing", "batch: write"}
# Outside a batch, the first of these whose functions the frozen stack holds.
_PHASES = [
    ("login", {"connect_mailbox"}),
    ("folder listing", {"listing", "reconcile_folders"}),
    ("search", {"search"}),
    ("flags and expunges", {"_flags_and_expunges"}),
    ("checkpoint", {"_start", "_backfill", "_checkpoint"}),
    ("the lease", {"_claimed", "_start_run", "_release"}),  # taking it, or giving it back
    ("finishing", {"delete_orphans", "_succeeded"}),
]


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Kill a run `delay` seconds after it starts, or `extra` seconds after it stored
    `batches` batches, whichever comes first."""

    delay: float
    batches: int
    extra: float


@dataclass(frozen=True, slots=True)
class Kill:
    """One kill that interrupted a running sync: when, what it hit, what was stored then."""

    after: float
    trigger: str
    phase: str
    stored: int


def phase_of(stack: list[str], threads: list[list[str]]) -> str:
    """Name what a run was doing from its threads' stacks of `path:function` entries.

    A batch is fetched on the main thread while the one before it is written on the
    writer thread: a kill may interrupt both at once.
    """
    app = {entry.rpartition(":")[2] for entry in stack if entry.startswith("app/")}
    if "sync_mailbox" not in app:
        return "starting up" if "create_db_engine" in app else "outside the sync"
    writing = any(entry.endswith(":_write_batch") for thread in threads for entry in thread)
    if "_store" in app and app & {"fetch", "identities"}:
        return "batch: fetch while writing" if writing else "batch: fetch"
    if "_store" in app and "_known_elsewhere" in app:
        return "batch: lookup"
    if writing:  # the main thread waits for the write
        return "batch: write"
    for phase, functions in _PHASES:
        if app & functions:
            return phase
    return "between steps"


def run_count(engine: Engine, mailbox_id: int) -> int:
    with session_scope(engine) as session:
        return session.exec(
            select(func.count()).select_from(SyncRun).where(SyncRun.mailbox_id == mailbox_id)
        ).one()


def reach(
    point: KillPoint, process: subprocess.Popen[str], engine: Engine, mailbox_id: int, runs: int
) -> tuple[str, float]:
    """Wait for `point` of the run set off after `runs` runs; say which limit came first.

    The clock starts once the run is recorded, its lease taken: on a loaded machine a
    driver may need a second to load the database driver, and kills there test nothing.
    Return the limit and the seconds from the start to the kill point.
    """
    deadline = time.monotonic() + 60
    while run_count(engine, mailbox_id) == runs and process.poll() is None:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.005)
    start = time.monotonic()
    enough = stored_count(engine, mailbox_id) + point.batches * BATCH_SIZE
    while (left := start + point.delay - time.monotonic()) > 0 and process.poll() is None:
        if stored_count(engine, mailbox_id) >= enough:
            time.sleep(min(point.extra, left))
            return f"{point.batches} batches", time.monotonic() - start
        time.sleep(min(0.005, left))
    return "delay", time.monotonic() - start


def runs_left_running(engine: Engine, mailbox_id: int) -> int:
    with session_scope(engine) as session:
        statement = select(func.count()).where(
            SyncRun.mailbox_id == mailbox_id, col(SyncRun.status) == SyncRunStatus.RUNNING
        )
        return session.exec(statement).one()


@pytest.mark.slow
def test_sigkill_at_twenty_random_points_of_a_large_sync_loses_and_repeats_nothing(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    seed = seed_from_environment(SEED_VARIABLE)
    rng = random.Random(seed)
    mailbox_id = add_mailbox(mail_user)
    settings = settings.model_copy(update={"sync_batch_size": BATCH_SIZE})
    server = {
        "INBOX": set(append_many(mail_user, "INBOX", "in", FIRST_INBOX)),
        "Sent": set(append_many(mail_user, "Sent", "out", FIRST_SENT)),
    }
    new_mail_tags: list[str] = []
    kills: list[Kill] = []
    finished_first = new_mail_due = 0
    strata = list(range(KILLS))  # the twentieths of LONGEST_DELAY no kill has hit yet
    rng.shuffle(strata)
    started = time.monotonic()

    with (
        replayed_with(SEED_VARIABLE, seed),
        DriverSeries(settings, ["--freeze-on-signal", str(mailbox_id)]) as drivers,
    ):
        for _attempt in range(MAX_ATTEMPTS):
            point = KillPoint(
                delay=(strata[-1] + rng.random()) * LONGEST_DELAY / KILLS,
                batches=rng.randint(1, MOST_BATCHES),
                extra=rng.uniform(0, LONGEST_EXTRA),
            )
            runs = run_count(engine, mailbox_id)
            process = drivers.start()
            trigger, after = reach(point, process, engine, mailbox_id, runs)
            killed = freeze_and_kill(process)
            if killed.finished:
                assert [(r["status"], r["complete"]) for r in killed.synced] == [
                    ("succeeded", True)
                ], "a run that was not killed syncs all"
                finished_first += 1
                new_mail_due += 1  # give the next runs something to do
            else:
                phase = phase_of(killed.stack, killed.threads)
                kills.append(Kill(after, trigger, phase, stored_count(engine, mailbox_id)))
                strata.pop()
                new_mail_due += len(kills) in NEW_MAIL_AFTER_KILLS
            assert_consistent(engine, mailbox_id, server)
            if new_mail_due and inbox_modseq(engine, mailbox_id) is not None:
                # INBOX's marks are fixed: this mail is new to the sync, not first-sync mail.
                new_mail_due -= 1
                tag = f"new{len(new_mail_tags)}"
                server["INBOX"] |= set(append_many(mail_user, "INBOX", tag, NEW_MAIL))
                new_mail_tags.append(tag)
            if len(kills) == KILLS:
                break
        stored_before_final_run = stored_count(engine, mailbox_id)
        run_to_completion(engine, settings, mailbox_id)

        total = sum(len(uids) for uids in server.values())
        print(
            f"\nseed {seed}: {len(kills)} kills hit a running sync, {finished_first} runs "
            f"finished before their kill; {stored_before_final_run} of {total} messages "
            f"stored before the final run; {time.monotonic() - started:.1f} s"
        )
        print("phases hit:", dict(Counter(kill.phase for kill in kills).most_common()))
        for n, kill in enumerate(kills, 1):
            print(f"  kill {n:2}: {kill.after:.3f} s ({kill.trigger}), {kill.phase}, {kill.stored}")
        assert len(kills) == KILLS, f"only {len(kills)} of {MAX_ATTEMPTS} runs were interrupted"
        phases = {kill.phase for kill in kills}
        assert len(phases) >= 3 and phases & _BATCH_PHASES, "kills spread"

        assert_complete(engine, mailbox_id, mail_user)
        assert_mirrors_server(engine, mailbox_id, mail_user)
        new = {mid for tag in new_mail_tags for mid in expected_message_ids(tag, NEW_MAIL)}
        old = expected_message_ids("in", FIRST_INBOX) | expected_message_ids("out", FIRST_SENT)
        assert message_ids(engine, mailbox_id).keys() == old | new
        assert_announced(engine, mailbox_id, new)  # each new email once, no old one
        assert new_mail_tags, "new mail arrived during the kills"
        assert runs_left_running(engine, mailbox_id) == 0
