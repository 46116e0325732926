"""Queue a sync on arq and read the run history; the API's connection to the job queue.

    POST .../sync
      a queued (or running, lease live) run of that kind exists ...... 202 with it
      queued run older than a minute, its job gone from Redis ......... failed `job_lost`,
                                                                       then as below
      insert a `queued` run and commit, then enqueue its job:
        queued ..................................................... 202 with the run
        Redis down ................................................. run deleted, 503
        a job of that kind is already waiting (the scheduler's) .... 202 with the run: a job
                                                                       without a run of its
                                                                       own adopts the oldest
                                                                       queued one when it starts
        that job is already running ................................ run deleted; 202 with
                                                                       the running one

The run is committed before its job is queued, so a worker that starts the job
at once finds the row; a run whose job could not be queued is deleted, so no
`queued` row is left that nothing will ever run.

Redis may be down when the API starts: the pool is made at startup when Redis
answers, else at the first request that needs it, and every such request
while it is down gets 503 `queue_unavailable` with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Annotated

from arq import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from fastapi import APIRouter, Body, Depends
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from app.api.auth import require_api_key
from app.api.deps import DATABASE_ONLY, EngineDep, MailboxIdDep, SessionDep, SyncRunIdPath
from app.api.limits import RATE_LIMIT
from app.api.pagination import (
    CursorQuery,
    LimitQuery,
    Page,
    decode_id_cursor,
    id_page,
)
from app.api.problems import (
    API_KEY_PROBLEMS,
    DATABASE_UNAVAILABLE,
    RATE_LIMITED,
    ProblemDoc,
    missing,
    not_found,
    problem_responses,
)
from app.api.queue import QUEUE_TIMEOUT_SECONDS, QueueDep, queue_unavailable
from app.api.sync_runs.schemas import SyncRequest, SyncRunRead
from app.db import session_scope
from app.db.models import SyncRun, SyncTrigger, persisted_id, utcnow
from app.db.repositories.sync_runs import (
    add_queued_sync_run,
    delete_queued_sync_run,
    fail_queued_sync_run,
    get_sync_run,
    mailbox_sync_runs,
    unfinished_sync_run,
)
from app.queue import enqueue_sync, sync_job_id

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["sync"],
    dependencies=[Depends(require_api_key)],
    responses=API_KEY_PROBLEMS,
)

# A queued run younger than this may still be waiting for its job to be put on the queue.
JOB_LOST_AFTER = timedelta(minutes=1)


# -- routes ---------------------------------------------------------------------------------


_NO_SUCH_MAILBOX = missing("mailbox")
# The body may be left out. A default object, not `None`: a nullable optional body makes
# generated clients (openapi-python-client) send a placeholder instead of no body.
_FULL_SYNC = SyncRequest()


@router.post(
    "/mailboxes/{mailbox_id}/sync",
    operation_id="queue_sync",
    dependencies=[RATE_LIMIT],
    summary="Queue a sync of the mailbox now",
    description=(
        "Answers 202 with a `queued` run that an arq worker then starts. While a run of the"
        " same kind is queued or running, answers 202 with that run instead of a second one."
    ),
    status_code=202,
    response_model=SyncRunRead,
    responses=problem_responses(
        _NO_SUCH_MAILBOX,
        ProblemDoc(409, "A scheduled sync is queued and not yet started"),
        RATE_LIMITED,
        ProblemDoc(
            503, "`queue_unavailable`: Redis, which holds the jobs, is down", retry_after=True
        ),
        DATABASE_UNAVAILABLE,
    ),
)
async def queue_sync(
    mailbox_id: MailboxIdDep,
    engine: EngineDep,
    queue: QueueDep,
    body: Annotated[SyncRequest, Body()] = _FULL_SYNC,
) -> SyncRunRead:
    run = await queue_sync_run(engine, queue, mailbox_id, folders_only=body.folders_only)
    return SyncRunRead.of(run)


@router.get(
    "/mailboxes/{mailbox_id}/sync-runs",
    operation_id="list_sync_runs",
    summary="The mailbox's sync runs, newest first",
    response_model=Page[SyncRunRead],
    responses=problem_responses(_NO_SUCH_MAILBOX),
    dependencies=[DATABASE_ONLY],
)
def list_sync_runs(
    session: SessionDep,
    mailbox_id: MailboxIdDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[SyncRunRead]:
    before_id = decode_id_cursor(cursor)
    runs = mailbox_sync_runs(session, mailbox_id, limit=limit + 1, before_id=before_id)
    return id_page(runs, limit, SyncRunRead.of)


@router.get(
    "/sync-runs/{run_id}",
    operation_id="get_sync_run",
    summary="One sync run: outcome, counts, bytes, duration, error",
    response_model=SyncRunRead,
    responses=problem_responses(missing("sync run")),
    dependencies=[DATABASE_ONLY],
)
def read_sync_run(session: SessionDep, run_id: SyncRunIdPath) -> SyncRunRead:
    run = get_sync_run(session, run_id)
    if run is None:
        raise not_found("sync run", run_id)
    return SyncRunRead.of(run)


# -- queueing a run -------------------------------------------------------------------------


async def queue_sync_run(
    engine: Engine, queue: ArqRedis, mailbox_id: int, *, folders_only: bool
) -> SyncRun:
    """Return the mailbox's unfinished run of this kind, or queue a new one (see module doc)."""
    current = await run_in_threadpool(_unfinished_run, engine, mailbox_id, folders_only)
    if current is not None and not await _job_lost(queue, current):
        return current
    run = await run_in_threadpool(_add_run, engine, mailbox_id, folders_only, current)
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
            queued = await enqueue_sync(
                queue,
                mailbox_id,
                folders_only=folders_only,
                run_id=persisted_id(run),
                trigger=SyncTrigger.API,
            )
    except (RedisError, OSError) as exc:
        await run_in_threadpool(_delete_run, engine, persisted_id(run))
        raise queue_unavailable() from exc
    if queued or not await _job_started(queue, mailbox_id, folders_only):
        return run  # ours, or a scheduled job still waiting, which will fill this run in
    await run_in_threadpool(_delete_run, engine, persisted_id(run))
    running = await run_in_threadpool(_unfinished_run, engine, mailbox_id, folders_only)
    if running is None:  # it finished in the meantime: queue ours again
        return await queue_sync_run(engine, queue, mailbox_id, folders_only=folders_only)
    return running


async def _job_started(queue: ArqRedis, mailbox_id: int, folders_only: bool) -> bool:
    """Say whether the queued job of this kind is already running (it made its own run)."""
    job_id = sync_job_id(queue.default_queue_name, mailbox_id, folders_only=folders_only)
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
            return bool(await queue.exists(in_progress_key_prefix + job_id))
    except (RedisError, OSError) as exc:
        raise queue_unavailable() from exc


async def _job_lost(queue: ArqRedis, run: SyncRun) -> bool:
    """Say whether a queued run's job vanished from Redis (a flushed or restarted Redis)."""
    if run.started_at is not None or utcnow() - run.created_at < JOB_LOST_AFTER:
        return False
    job_id = sync_job_id(queue.default_queue_name, run.mailbox_id, folders_only=run.folders_only)
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
            return not await queue.exists(job_key_prefix + job_id)
    except (RedisError, OSError) as exc:
        raise queue_unavailable() from exc


def _unfinished_run(engine: Engine, mailbox_id: int, folders_only: bool) -> SyncRun | None:
    with session_scope(engine) as session:
        return unfinished_sync_run(session, mailbox_id, folders_only=folders_only, now=utcnow())


def _add_run(engine: Engine, mailbox_id: int, folders_only: bool, lost: SyncRun | None) -> SyncRun:
    """Commit a new queued run, closing the lost one it replaces in the same transaction."""
    with session_scope(engine) as session:
        if lost is not None and lost.id is not None:
            fail_queued_sync_run(
                session,
                lost.id,
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
