"""Queue a sync asked for now (the API's `POST .../sync`): a `queued` run and its job.

    a queued (or running, lease live) run of that kind exists ...... that run
    queued run older than a minute, its job gone from Redis ......... failed `job_lost`,
                                                                     then as below
    insert a `queued` run and commit, then enqueue its job:
      queued ..................................................... the run
      Redis down ................................................. run deleted,
                                                                     QueueUnavailableError
      a job of that kind is already waiting (the scheduler's) .... the run: a job without
                                                                     a run of its own adopts
                                                                     the oldest queued one
                                                                     when it starts
      that job is already running ................................ run deleted; the running
                                                                     one

The run is committed before its job is queued, so a worker that starts the job
at once finds the row; a run whose job could not be queued is deleted, so no
`queued` row is left that nothing will ever run. Each call on Redis is bounded
(`answered_in_time`): a Redis that is down or slow fails the request at once.
"""

from __future__ import annotations

from datetime import timedelta

from anyio import to_thread
from arq import ArqRedis
from sqlalchemy.engine import Engine

from app.db import session_scope
from app.db.models import SyncRun, SyncTrigger, persisted_id, utcnow
from app.db.repositories.sync_runs import (
    add_queued_sync_run,
    delete_queued_sync_run,
    fail_queued_sync_run,
    unfinished_sync_run,
)
from app.job_queue import (
    QueueUnavailableError,
    answered_in_time,
    enqueue_sync,
    sync_job_exists,
    sync_job_running,
)

# A queued run younger than this may still be waiting for its job to be put on the queue.
JOB_LOST_AFTER = timedelta(minutes=1)


async def queue_sync_run(
    engine: Engine, queue: ArqRedis, mailbox_id: int, *, folders_only: bool
) -> SyncRun:
    """Return the mailbox's unfinished run of this kind, or queue a new one (see module doc)."""
    current = await to_thread.run_sync(_unfinished_run, engine, mailbox_id, folders_only)
    if current is not None and not await _job_lost(queue, current):
        return current
    run = await to_thread.run_sync(_add_run, engine, mailbox_id, folders_only, current)
    run_id = persisted_id(run)
    try:
        async with answered_in_time():
            queued = await enqueue_sync(
                queue, mailbox_id, folders_only=folders_only, run_id=run_id, trigger=SyncTrigger.API
            )
    except QueueUnavailableError:
        await to_thread.run_sync(_delete_run, engine, run_id)
        raise
    async with answered_in_time():
        started = not queued and await sync_job_running(
            queue, mailbox_id, folders_only=folders_only
        )
    if not started:
        return run  # ours, or a scheduled job still waiting, which will fill this run in
    await to_thread.run_sync(_delete_run, engine, run_id)
    running = await to_thread.run_sync(_unfinished_run, engine, mailbox_id, folders_only)
    if running is None:  # it finished in the meantime: queue ours again
        return await queue_sync_run(engine, queue, mailbox_id, folders_only=folders_only)
    return running


async def _job_lost(queue: ArqRedis, run: SyncRun) -> bool:
    """Say whether a queued run's job vanished from Redis (a flushed or restarted Redis)."""
    if run.started_at is not None or utcnow() - run.created_at < JOB_LOST_AFTER:
        return False
    async with answered_in_time():
        return not await sync_job_exists(queue, run.mailbox_id, folders_only=run.folders_only)


def _unfinished_run(engine: Engine, mailbox_id: int, folders_only: bool) -> SyncRun | None:
    with session_scope(engine) as session:
        return unfinished_sync_run(session, mailbox_id, folders_only=folders_only, now=utcnow())


def _add_run(engine: Engine, mailbox_id: int, folders_only: bool, lost: SyncRun | None) -> SyncRun:
    """Commit a new queued run, closing the lost one it replaces in the same transaction."""
    with session_scope(engine) as session:
        if lost is not None:
            fail_queued_sync_run(
                session,
                persisted_id(lost),
                error_code="job_lost",
                error="its job vanished from the queue before a worker started it",
                now=utcnow(),
            )
        return add_queued_sync_run(
            session, mailbox_id, folders_only=folders_only, trigger=SyncTrigger.API
        )


def _delete_run(engine: Engine, run_id: int) -> None:
    with session_scope(engine) as session:
        delete_queued_sync_run(session, run_id)
