"""The API's connection to the job queue (arq's Redis), made once per process.

Redis may be down when the API starts: the pool is made at startup when Redis
answers, else at the first request that needs it, and every such request
while it is down gets 503 `queue_unavailable` with Retry-After (the problem
table maps `QueueUnavailableError`).

Work a request only hands on is queued once the response is on its way and
never fails the request when Redis is down: a registered or re-authenticated
mailbox's sync (the mailbox is due either way and the scheduler's next round
picks it up), and a wake-up of the event dispatcher (its cron runs every 10 s).
(A mailbox's own login fails earlier while Redis is down: it cannot take a slot of
the connection budget, 503 `connection_budget_unavailable`.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Annotated

from arq import ArqRedis, create_pool
from fastapi import BackgroundTasks, Depends, Request

from app.config import Settings
from app.db.models import Mailbox, SyncTrigger, persisted_id
from app.job_queue import (
    REDIS_ERRORS,
    EmbeddedRedisError,
    QueueUnavailableError,
    answered_in_time,
    enqueue_dispatch,
    enqueue_sync,
    queued_job_count,
    redis_settings,
)

log = logging.getLogger(__name__)


async def connect_queue(settings: Settings) -> ArqRedis | None:
    """Connect to arq's Redis with one attempt; None when it does not answer (log says why)."""
    try:
        where = await asyncio.to_thread(redis_settings, settings)
        return await create_pool(
            replace(where, conn_retries=0), default_queue_name=settings.queue_name
        )
    except (*REDIS_ERRORS, EmbeddedRedisError) as exc:
        log.warning("api.queue_unavailable", extra={"error": type(exc).__name__})
        return None


async def queue_pool(request: Request) -> ArqRedis:
    """Return the app's queue pool, connecting first if Redis was down until now."""
    state = request.app.state
    if state.queue is None:
        async with state.queue_lock:
            if state.queue is None:
                state.queue = await connect_queue(state.settings)
    pool: ArqRedis | None = state.queue
    if pool is None:
        raise QueueUnavailableError("no connection")
    return pool


QueueDep = Annotated[ArqRedis, Depends(queue_pool)]


async def queue_answers(request: Request) -> bool:
    """PING the queue's Redis (for readiness): True when it answers in time."""
    try:
        pool = await queue_pool(request)
        async with answered_in_time():
            await pool.ping()
    except QueueUnavailableError:
        return False
    return True


async def queue_depth(request: Request) -> int | None:
    """Return how many jobs wait in the queue; None when it is not known (Redis down)."""
    pool: ArqRedis | None = getattr(request.app.state, "queue", None)
    if pool is None:
        return None
    try:
        async with answered_in_time():
            return await queued_job_count(pool)
    except QueueUnavailableError:
        return None


def queue_sync_after_commit(
    request: Request, background: BackgroundTasks, mailbox: Mailbox
) -> None:
    """Queue the mailbox's sync once the response is on its way (the row is committed by then)."""
    mailbox_id = persisted_id(mailbox)
    pool: ArqRedis | None = getattr(request.app.state, "queue", None)
    if pool is None:
        log.info("mailbox.sync_left_to_scheduler", extra={"mailbox_id": mailbox_id})
        return
    background.add_task(_queue_sync, pool, mailbox_id)


async def _queue_sync(pool: ArqRedis, mailbox_id: int) -> None:
    try:
        async with answered_in_time():
            await enqueue_sync(pool, mailbox_id, trigger=SyncTrigger.API)
            await enqueue_dispatch(pool)  # a restore's `credentials_restored` goes out now
    except QueueUnavailableError as exc:
        log.warning(
            "mailbox.sync_not_queued",
            extra={"mailbox_id": mailbox_id, "error": exc.reason, "due": True},
        )


async def wake_dispatcher(request: Request) -> None:
    """Ask a worker to dispatch events now; when Redis is down, the dispatcher's cron does it."""
    pool: ArqRedis | None = getattr(request.app.state, "queue", None)
    if pool is None:
        return
    try:
        async with answered_in_time():
            await enqueue_dispatch(pool)
    except QueueUnavailableError as exc:
        log.warning("api.dispatch_not_queued", extra={"error": exc.reason})
