"""The API's connection to the job queue (arq's Redis).

Redis may be down when the API starts: the pool is made at startup when Redis
answers, else at the first request that needs it, and every such request
while it is down gets 503 `queue_unavailable` with Retry-After.

A mailbox registered or given new credentials has its sync queued after the
transaction commits (so the worker finds the row), when the app has a queue.
The queue being away never fails that request: the mailbox is due either way and
the scheduler's next round picks it up. (Redis down fails it earlier: its login
cannot take a slot of the connection budget, 503 `connection_budget_unavailable`.)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Annotated

from arq import ArqRedis, create_pool
from fastapi import BackgroundTasks, Depends, Request
from redis.exceptions import RedisError

from app.api.problems import ApiError
from app.config import Settings
from app.db.models import Mailbox, SyncTrigger
from app.queue import EmbeddedRedisError, enqueue_dispatch, enqueue_sync, redis_settings

log = logging.getLogger(__name__)

QUEUE_TIMEOUT_SECONDS = 5.0
QUEUE_RETRY_AFTER_SECONDS = 10


async def connect_queue(settings: Settings) -> ArqRedis | None:
    """Connect to arq's Redis with one attempt; None when it does not answer (log says why)."""
    try:
        where = await asyncio.to_thread(redis_settings, settings)
        return await create_pool(
            replace(where, conn_retries=0), default_queue_name=settings.queue_name
        )
    except (RedisError, OSError, EmbeddedRedisError) as exc:
        log.warning("api.queue_unavailable", extra={"error": type(exc).__name__})
        return None


def queue_unavailable() -> ApiError:
    return ApiError(
        503,
        "queue_unavailable",
        "The job queue is not available",
        "Redis, which holds the sync jobs, does not answer; try again later",
        headers={"Retry-After": str(QUEUE_RETRY_AFTER_SECONDS)},
    )


async def queue_pool(request: Request) -> ArqRedis:
    """Return the app's queue pool, connecting first if Redis was down until now."""
    state = request.app.state
    if state.queue is None:
        async with state.queue_lock:
            if state.queue is None:
                state.queue = await connect_queue(state.settings)
    pool: ArqRedis | None = state.queue
    if pool is None:
        raise queue_unavailable()
    return pool


QueueDep = Annotated[ArqRedis, Depends(queue_pool)]


async def queue_answers(request: Request) -> bool:
    """PING the queue's Redis (for readiness): True when it answers in time."""
    try:
        pool = await queue_pool(request)
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
            await pool.ping()
    except (ApiError, RedisError, OSError):
        return False
    return True


def queue_sync_after_commit(
    request: Request, background: BackgroundTasks, mailbox: Mailbox
) -> None:
    """Queue the mailbox's sync once the response is on its way (the row is committed by then)."""
    assert mailbox.id is not None
    pool: ArqRedis | None = getattr(request.app.state, "queue", None)
    if pool is None:
        log.info("mailbox.sync_left_to_scheduler", extra={"mailbox_id": mailbox.id})
        return
    background.add_task(_queue_sync, pool, mailbox.id)


async def _queue_sync(pool: ArqRedis, mailbox_id: int) -> None:
    try:
        async with asyncio.timeout(QUEUE_TIMEOUT_SECONDS):
            await enqueue_sync(pool, mailbox_id, trigger=SyncTrigger.API)
            await enqueue_dispatch(pool)  # a restore's `credentials_restored` goes out now
    except (RedisError, OSError) as exc:
        log.warning(
            "mailbox.sync_not_queued",
            extra={"mailbox_id": mailbox_id, "error": type(exc).__name__, "due": True},
        )
