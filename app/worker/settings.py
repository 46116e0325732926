"""The arq worker's description: its jobs, its crons, and the limits taken from the settings.

`worker_settings(settings)` is what `arq.Worker` is built from, by the
supervisor of `imap-bridge worker` and `imap-bridge run` (app.supervised_worker).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypedDict

from arq import cron, func
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown
from arq.worker import Function

from app.config import Settings
from app.correlation import correlated
from app.db import create_db_engine
from app.job_queue import DISPATCH_JOB, SYNC_JOB, redis_settings
from app.worker.cron_jobs import dispatch_events_job, enqueue_due_syncs_job, prune_sync_runs_job
from app.worker.state import STATE_KEY, BusyRetry, JobContext, WorkerState, worker_state
from app.worker.sync_job import enqueue_follow_up, sync_job

# A run checkpoints once its time budget is spent; this leaves its last batch ample time.
_JOB_TIMEOUT_MARGIN_SECONDS = 600
_CRON_TIMEOUT_SECONDS = 60
_SPARE_THREADS = 4  # database look-ups of waiting jobs and the cron's query
_DISPATCH_TIMEOUT_SECONDS = 120
_PRUNE_TIMEOUT_SECONDS = 600


class WorkerSettings(TypedDict):
    """The arq `Worker` arguments of this service (`Worker(**worker_settings(settings))`)."""

    functions: Sequence[Function]
    cron_jobs: Sequence[CronJob]
    redis_settings: RedisSettings
    queue_name: str
    max_jobs: int
    job_timeout: int
    keep_result: int
    on_startup: StartupShutdown
    on_shutdown: StartupShutdown
    after_job_end: StartupShutdown


def worker_settings(
    settings: Settings, *, queue_name: str | None = None, busy_retry: BusyRetry | None = None
) -> WorkerSettings:
    """Describe the worker: the sync job, the every-minute cron, limits from `settings`.

    Results are not kept (`keep_result=0`): a run's outcome is its `sync_run`
    row, and a kept result would block the mailbox's job id from being queued
    again for as long as it is kept. A job may run well past its time budget
    (`job_timeout`), so arq never gives up on a job whose thread still syncs.
    """
    retry = busy_retry or BusyRetry.covering(settings.sync_lease_seconds)
    queue_name = queue_name or settings.queue_name

    async def start(ctx: JobContext) -> None:
        if STATE_KEY in ctx:
            return  # SupervisedWorker's next arq Worker: the process keeps its engine and threads
        # asyncio's default pool has min(32, cpus + 4) threads: on a small machine fewer than
        # SYNC_MAX_JOBS syncs would run, and the cron's query would queue behind them.
        threads = ThreadPoolExecutor(
            settings.sync_max_jobs + _SPARE_THREADS, thread_name_prefix="imap-bridge-sync"
        )
        asyncio.get_running_loop().set_default_executor(threads)
        ctx[STATE_KEY] = WorkerState(settings, retry, create_db_engine(settings.database_url))

    async def stop(ctx: JobContext) -> None:
        worker_state(ctx).engine.dispose()

    return WorkerSettings(
        # Every job runs with the correlation id it was queued with, or a new one (app.correlation).
        # One spare try beyond the busy retries: a redelivery after a crash also counts.
        functions=[
            func(correlated(sync_job), name=SYNC_JOB, max_tries=retry.attempts + 2),
            func(
                correlated(dispatch_events_job),
                name=DISPATCH_JOB,
                timeout=_DISPATCH_TIMEOUT_SECONDS,
            ),
        ],
        cron_jobs=[
            cron(
                correlated(dispatch_events_job),
                name=f"{queue_name}:dispatch-events",
                second=set(range(0, 60, 10)),
                timeout=_DISPATCH_TIMEOUT_SECONDS,
            ),
            cron(
                correlated(enqueue_due_syncs_job),
                name=f"{queue_name}:enqueue-due-syncs",  # cron job ids are global, like all
                second=0,
                timeout=_CRON_TIMEOUT_SECONDS,
            ),
            cron(
                correlated(prune_sync_runs_job),
                name=f"{queue_name}:prune-sync-runs",
                minute=17,  # once an hour, off the minute the due mailboxes are queued
                second=30,
                timeout=_PRUNE_TIMEOUT_SECONDS,
            ),
        ],
        redis_settings=redis_settings(settings),
        queue_name=queue_name,
        max_jobs=settings.sync_max_jobs,
        job_timeout=math.ceil(settings.sync_time_budget_seconds) + _JOB_TIMEOUT_MARGIN_SECONDS,
        keep_result=0,
        on_startup=start,
        on_shutdown=stop,
        after_job_end=enqueue_follow_up,
    )
