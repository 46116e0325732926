"""The worker's hourly prune keeps the run history bounded per mailbox, never what health reads.

Runs on SQLite and PostgreSQL (the `engine` fixture): the prune is one window-function
statement, which both must run the same way.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.db import session_scope
from app.db.models import SyncRun, SyncRunStatus, utcnow
from app.db.repositories.sync_runs import mailbox_sync_runs
from app.worker.cron_jobs import prune_old_sync_runs
from tests.support.factories import create_mailbox, id_of

SUCCEEDED, FAILED = SyncRunStatus.SUCCEEDED, SyncRunStatus.FAILED


def _add_runs(session: Session, mailbox_id: int, statuses: list[SyncRunStatus]) -> list[int]:
    """Add finished runs, oldest first, one minute apart; return their ids in that order."""
    start = utcnow() - timedelta(days=30)
    runs = [
        SyncRun(
            mailbox_id=mailbox_id,
            status=status,
            created_at=start + timedelta(minutes=n),
            finished_at=None if status is SyncRunStatus.RUNNING else start + timedelta(minutes=n),
        )
        for n, status in enumerate(statuses)
    ]
    session.add_all(runs)
    session.flush()
    return [run.id for run in runs if run.id is not None]


def _kept(engine: Engine, mailbox_id: int) -> list[int]:
    with session_scope(engine) as session:
        return sorted(
            run.id for run in mailbox_sync_runs(session, mailbox_id, limit=1_000) if run.id
        )


def test_prune_keeps_the_newest_runs_of_each_mailbox_and_its_last_success(engine: Engine) -> None:
    with session_scope(engine) as session:
        failing = id_of(create_mailbox(session))
        healthy = id_of(create_mailbox(session))
        # A mailbox that last succeeded long ago, then failed 10 times.
        failing_runs = _add_runs(session, failing, [SUCCEEDED, SUCCEEDED, *[FAILED] * 10])
        healthy_runs = _add_runs(session, healthy, [SUCCEEDED] * 6)

    pruned = prune_old_sync_runs(engine, keep=3)

    assert _kept(engine, failing) == [failing_runs[1], *failing_runs[-3:]], (
        "the failing mailbox keeps its 3 newest runs and its newest success"
    )
    assert _kept(engine, healthy) == healthy_runs[-3:], "the healthy mailbox keeps its 3 newest"
    assert pruned == (12 - 4) + (6 - 3)


def test_prune_leaves_unfinished_runs_and_a_mailbox_within_its_allowance(engine: Engine) -> None:
    with session_scope(engine) as session:
        busy = id_of(create_mailbox(session))
        young = id_of(create_mailbox(session))
        busy_runs = _add_runs(session, busy, [SyncRunStatus.RUNNING, FAILED, FAILED, FAILED])
        young_runs = _add_runs(session, young, [FAILED, SUCCEEDED])

    prune_old_sync_runs(engine, keep=1)

    assert _kept(engine, busy) == [busy_runs[0], busy_runs[-1]], (
        "a run still running is never pruned, however many runs came after it"
    )
    assert _kept(engine, young) == [young_runs[-1]], "within the allowance only the newest stays"
