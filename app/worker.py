"""The arq worker: a cron that queues the mailboxes that are due, and the job that syncs one.

    the process (`imap-bridge worker`, `imap-bridge run`): app.supervised_worker
    cron, every minute (one worker per tick) ... queue `sync` for each mailbox whose
                                                 `next_sync_at` passed; the job id makes
                                                 a second enqueue a no-op
    sync job
      its run already finished (redelivery) .... done: arq delivers at least once
      queued by the cron, no longer due ........ done: synced since the cron read the list
      marked in progress for 2/3 of SYNC_LEASE_SECONDS, renewed while it runs: a
        killed worker's job goes to another worker that soon, not after arq's timeout
      wait for a slot on the mailbox's host .... SYNC_MAX_CONNECTIONS_PER_HOST
      sync_mailbox in a thread
        lease held elsewhere, no run id ........ done: the holder is syncing it
        lease held elsewhere, a queued run ..... (the API's, with its run id) Retry every
                                                 30 s for as long as a crashed holder's
                                                 lease can last, then the run fails with
                                                 error code `busy`
        the database does not answer ........... Retry in 2 s, doubling to 60 s; a run
                                                 the engine could record as failed
                                                 (`database_unavailable`) is over: the
                                                 retry makes a new one, unless the API
                                                 asked for that run (the schedule then
                                                 retries the mailbox)
        time budget spent (incomplete) ......... a follow-up job is queued as soon as
                                                 this one has left the queue
        done ................................... the engine set `next_sync_at`
      watched (queued by the watcher) .......... take the changed folders (app.queue) and
                                                 sync only those; lease held or the budget
                                                 spent: the folders go back; at the end a
                                                 follow-up is queued if any are waiting
      queue the dispatcher ..................... Redis down: wait for it (1 s doubling to
                                                 10 s), so that arq can record the job's
                                                 end once it answers

Notifications: a `dispatch_events` job (app.notify.dispatcher) is queued after
every sync job, whose events are committed by then, and runs as a cron every
10 seconds for the events other processes wrote and the retries that fell due.

The schedule lives in the database, not in the cron: the engine sets
`next_sync_at` after every run (the interval after a success, a backoff after a
failure, now when the time budget ran out), so a changed
`SYNC_INTERVAL_MINUTES` needs no restart and failed mailboxes retry on their
backoff. A follow-up that is lost (the worker died between the two steps) is
picked up by the next tick, since the mailbox is due.

Limits are per worker process: `SYNC_MAX_JOBS` jobs at once, and at most
`SYNC_MAX_CONNECTIONS_PER_HOST` of them talking to one IMAP host (a job waits
for a slot, holding one of the `SYNC_MAX_JOBS`). With N workers a host sees
up to N times that many connections. Right after a Redis outage a process
may run more jobs for a while (the replaced arq Worker's, finishing, and the
new one's), but never more syncs per host nor more threads: those limits
belong to the process, not to an arq Worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

from arq import ArqRedis, Retry, cron, func
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.cron import CronJob
from arq.typing import StartupShutdown
from arq.worker import Function
from sqlalchemy.engine import Engine

from app.backoff import Backoff
from app.config import Settings
from app.correlation import correlated, correlation_scope, current_correlation_id
from app.db import create_db_engine, session_scope
from app.db.models import SyncRun, SyncRunStatus, SyncTrigger, utcnow
from app.db.repositories.mailboxes import due_mailbox_ids, get_mailbox
from app.notify.dispatcher import dispatch_due
from app.queue import (
    DISPATCH_JOB,
    REDIS_ERRORS,
    SYNC_JOB,
    enqueue_dispatch,
    enqueue_sync,
    enqueue_watched_sync,
    pending_folders_exist,
    redis_settings,
    take_pending_folders,
    until_redis_answers,
)
from app.security import SecretBox
from app.sync.errors import DatabaseUnavailableError, MailboxNotFoundError, database_outages
from app.sync.service import sync_mailbox

log = logging.getLogger(__name__)

JobContext = dict[Any, Any]

BUSY_ERROR_CODE = "busy"
_STATE = "imap_bridge.state"
_FOLLOW_UP = "imap_bridge.follow_up"
# A run checkpoints once its time budget is spent; this leaves its last batch ample time.
_JOB_TIMEOUT_MARGIN_SECONDS = 600
_CRON_TIMEOUT_SECONDS = 60
_SPARE_THREADS = 4  # database look-ups of waiting jobs and the cron's query
_DISPATCH_BUDGET_SECONDS = 50  # a pass over the outbox, then the next cron tick continues
_DISPATCH_TIMEOUT_SECONDS = 120
# A watched sync that found the mailbox leased (a scheduled sync runs) tries again after this.
_WATCHED_RETRY_SECONDS = 5.0

_DATABASE_RETRY = Backoff(first=2, cap=60)


@dataclass(frozen=True, slots=True)
class BusyRetry:
    """How long a requested run waits for a lease that another worker holds."""

    delay_seconds: float
    attempts: int

    @classmethod
    def covering(cls, lease_seconds: float, delay_seconds: float = 30.0) -> BusyRetry:
        """Wait as long as a crashed holder's lease can last, so only a live holder fails a run."""
        return cls(delay_seconds, max(1, math.ceil(lease_seconds / delay_seconds)))


class HostSlots:
    """One semaphore per IMAP host, so a worker never opens too many connections to one server."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._slots: dict[str, asyncio.Semaphore] = {}

    def __call__(self, host: str) -> asyncio.Semaphore:
        return self._slots.setdefault(host.casefold(), asyncio.Semaphore(self._per_host))


@dataclass(slots=True)
class _WorkerState:
    settings: Settings
    busy_retry: BusyRetry
    engine: Engine
    host_slots: HostSlots = field(init=False)

    def __post_init__(self) -> None:
        self.host_slots = HostSlots(self.settings.sync_max_connections_per_host)


@dataclass(slots=True)
class _FollowUp:
    mailbox_id: int
    trigger: SyncTrigger
    watched: bool = False  # queue a watched sync if changed folders wait, after `defer_seconds`
    defer_seconds: float = 0
    correlation_id: str | None = field(default_factory=current_correlation_id)  # the job's


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
        if _STATE in ctx:
            return  # SupervisedWorker's next arq Worker: the process keeps its engine and threads
        # asyncio's default pool has min(32, cpus + 4) threads: on a small machine fewer than
        # SYNC_MAX_JOBS syncs would run, and the cron's query would queue behind them.
        threads = ThreadPoolExecutor(
            settings.sync_max_jobs + _SPARE_THREADS, thread_name_prefix="imap-bridge-sync"
        )
        asyncio.get_running_loop().set_default_executor(threads)
        ctx[_STATE] = _WorkerState(settings, retry, create_db_engine(settings.database_url))

    async def stop(ctx: JobContext) -> None:
        _state(ctx).engine.dispose()

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
        ],
        redis_settings=redis_settings(settings),
        queue_name=queue_name,
        max_jobs=settings.sync_max_jobs,
        job_timeout=math.ceil(settings.sync_time_budget_seconds) + _JOB_TIMEOUT_MARGIN_SECONDS,
        keep_result=0,
        on_startup=start,
        on_shutdown=stop,
        after_job_end=_enqueue_follow_up,
    )


async def enqueue_due_syncs(pool: ArqRedis, engine: Engine) -> list[int]:
    """Queue a sync of every mailbox whose `next_sync_at` passed; return the newly queued."""
    due = await asyncio.to_thread(_due_mailbox_ids, engine)
    queued = [
        mailbox_id for mailbox_id in due if await enqueue_sync(pool, mailbox_id, only_if_due=True)
    ]
    level = logging.INFO if queued else logging.DEBUG  # quiet while nothing is due
    log.log(level, "worker.due_queued", extra={"due": len(due), "queued": len(queued)})
    return queued


async def enqueue_due_syncs_job(ctx: JobContext) -> int:
    """Cron entry point: queue the due mailboxes."""
    return len(await enqueue_due_syncs(ctx["redis"], _state(ctx).engine))


async def sync_job(
    ctx: JobContext,
    mailbox_id: int,
    *,
    folders_only: bool = False,
    run_id: int | None = None,
    trigger: str = SyncTrigger.CRON.value,
    only_if_due: bool = False,
    watched: bool = False,
) -> str:
    """Sync one mailbox in a thread, within its host's connection limit; safe to run twice.

    `watched` (the watcher's jobs) syncs only the folders that changed since the
    last watched sync took them; those it could not sync wait for a follow-up.
    """
    facts = {"mailbox_id": mailbox_id, "job_id": ctx["job_id"], "run_id": run_id}
    folders: frozenset[str] | None = None
    if watched:
        ctx[_FOLLOW_UP] = _FollowUp(mailbox_id, SyncTrigger.WATCH, watched=True)
        folders = await take_pending_folders(ctx["redis"], mailbox_id)
        if not folders:
            return "no changed folders"
    try:
        async with (
            _job_claim_kept_short(ctx, _state(ctx).settings.sync_lease_seconds),
            _folders_back_on_failure(ctx["redis"], mailbox_id, folders),
        ):
            with database_outages():
                return await _sync(
                    ctx,
                    mailbox_id,
                    folders_only=folders_only,
                    run_id=run_id,
                    trigger=trigger,
                    only_if_due=only_if_due and ctx["job_try"] == 1,  # a retry must run
                    facts=facts,
                    folders=folders,
                )
    except DatabaseUnavailableError as exc:
        delay = _DATABASE_RETRY.delay(ctx["job_try"])
        log.warning(
            "worker.database_unavailable", extra={**facts, "try": ctx["job_try"], "retry_in": delay}
        )
        raise Retry(defer=delay) from exc


@contextlib.asynccontextmanager
async def _job_claim_kept_short(ctx: JobContext, lease_seconds: float) -> AsyncIterator[None]:
    """Let arq hand this job to another worker soon after this process dies.

    arq marks a started job in progress for the longest job timeout (over ten
    minutes), and a killed worker's job, whose id also keeps the cron from queueing
    the mailbox again, would wait that long. While the job runs, its mark is renewed
    every third of SYNC_LEASE_SECONDS to last two thirds of it.
    """
    key = in_progress_key_prefix + ctx["job_id"]
    lasts = timedelta(seconds=lease_seconds * 2 / 3)

    async def renew() -> None:
        while True:
            with contextlib.suppress(*REDIS_ERRORS):  # arq's own mark then simply lasts
                await ctx["redis"].pexpire(key, lasts)
            await asyncio.sleep(lease_seconds / 3)

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing


@contextlib.asynccontextmanager
async def _folders_back_on_failure(
    pool: ArqRedis, mailbox_id: int, folders: frozenset[str] | None
) -> AsyncIterator[None]:
    """Put a watched job's folders back when it fails: its retry or follow-up syncs them."""
    try:
        yield
    except BaseException:
        if folders:
            await enqueue_watched_sync(pool, mailbox_id, folders)
        raise


async def _sync(
    ctx: JobContext,
    mailbox_id: int,
    *,
    folders_only: bool,
    run_id: int | None,
    trigger: str,
    only_if_due: bool,
    facts: dict[str, Any],
    folders: frozenset[str] | None = None,
) -> str:
    state = _state(ctx)
    if run_id is not None and await asyncio.to_thread(_run_finished, state.engine, run_id):
        log.info("worker.sync_redelivered", extra=facts)
        return "already done"
    target = await asyncio.to_thread(_sync_target, state.engine, mailbox_id)
    if target is None:
        return _mailbox_deleted(facts)
    if only_if_due and not target.due:
        # The cron read the due list, then this mailbox's previous job ended and freed its
        # job id before the cron queued it again: it was just synced.
        log.info("worker.sync_not_due", extra=facts)
        return "not due"
    async with state.host_slots(target.host):
        try:
            result = await asyncio.to_thread(
                sync_mailbox,
                state.engine,
                mailbox_id,
                state.settings,
                folders_only=folders_only,
                trigger=SyncTrigger(trigger),
                run_id=run_id,
                folders=folders,
            )
        except MailboxNotFoundError:  # deleted while the job waited for its slot
            return _mailbox_deleted(facts)
    if result is None:
        return await (
            _watched_lease_held(ctx, mailbox_id, folders, facts)
            if folders
            else _lease_held(ctx, state, run_id, facts)
        )
    if result.error_code == DatabaseUnavailableError.code and run_id is None:
        # Recorded as failed and the lease released: a new run resumes at the last stored batch.
        raise DatabaseUnavailableError(f"run {result.run_id} failed: the database did not answer")
    # The run's events are committed: deliver them now.
    await until_redis_answers(
        lambda: enqueue_dispatch(ctx["redis"]), "worker.job_waits_for_redis", facts
    )
    if result.status is SyncRunStatus.SUCCEEDED and not result.complete:
        if folders:  # the budget ran out: the same folders continue in the follow-up
            await enqueue_watched_sync(ctx["redis"], mailbox_id, folders)
        else:
            ctx[_FOLLOW_UP] = _FollowUp(mailbox_id, SyncTrigger(trigger))
    log.info(
        "worker.sync_done",
        extra={
            **facts,
            "status": result.status.value,
            "complete": result.complete,
            "new": result.counts.new,
            "error_code": result.error_code,
        },
    )
    return f"{result.status.value}, {result.counts.new} new" + (
        "" if result.complete else ", continues"
    )


async def dispatch_events_job(ctx: JobContext) -> str:
    """Deliver the outbox (app.notify.dispatcher), pass after pass while passes find work.

    With the database away, a pass ends with one warning, no traceback: the next
    tick, ten seconds on, tries again, and what the pass had claimed is claimed again
    once its claim runs out.
    """
    state = _state(ctx)
    secrets = SecretBox.from_settings(state.settings)
    deadline = time.monotonic() + _DISPATCH_BUDGET_SECONDS
    delivered = failed = 0
    while True:
        try:
            with database_outages():
                report = await dispatch_due(state.engine, state.settings, secrets)
        except DatabaseUnavailableError as exc:
            log.warning("worker.dispatch_database_unavailable", extra={"reason": str(exc)})
            return f"{delivered} delivered, {failed} failed, then the database did not answer"
        delivered += report.delivered
        failed += report.failed
        if not report.busy or time.monotonic() > deadline:
            return f"{delivered} delivered, {failed} failed"


def _mailbox_deleted(facts: dict[str, Any]) -> str:
    log.info("worker.mailbox_gone", extra=facts)
    return "mailbox deleted"


async def _lease_held(
    ctx: JobContext, state: _WorkerState, run_id: int | None, facts: dict[str, Any]
) -> str:
    """Leave a scheduled sync to the holder; make a requested run wait, then fail it."""
    if run_id is None:
        log.info("worker.sync_skipped_lease_held", extra=facts)
        return "synced elsewhere"
    if ctx["job_try"] <= state.busy_retry.attempts:
        log.info("worker.sync_waits_for_lease", extra={**facts, "try": ctx["job_try"]})
        raise Retry(defer=state.busy_retry.delay_seconds)
    await asyncio.to_thread(_fail_busy_run, state.engine, run_id)
    log.warning("worker.sync_busy", extra=facts)
    return BUSY_ERROR_CODE


async def _watched_lease_held(
    ctx: JobContext, mailbox_id: int, folders: frozenset[str], facts: dict[str, Any]
) -> str:
    """Put the folders back and try again shortly: the running sync may have passed them."""
    await enqueue_watched_sync(ctx["redis"], mailbox_id, folders)
    ctx[_FOLLOW_UP] = _FollowUp(
        mailbox_id, SyncTrigger.WATCH, watched=True, defer_seconds=_WATCHED_RETRY_SECONDS
    )
    log.info("worker.watched_sync_waits_for_lease", extra=facts)
    return "synced elsewhere, tries again"


async def _enqueue_follow_up(ctx: JobContext) -> None:
    """Queue the rest of an incomplete sync, now that its own job id is free again.

    After a watched job, queue one more if changes arrived while it ran.
    """
    follow_up = ctx.get(_FOLLOW_UP)
    if isinstance(follow_up, _FollowUp):
        with correlation_scope(follow_up.correlation_id):  # after_job_end runs outside the job
            await _queue_follow_up(ctx, follow_up)


async def _queue_follow_up(ctx: JobContext, follow_up: _FollowUp) -> None:
    if follow_up.watched:
        if await pending_folders_exist(ctx["redis"], follow_up.mailbox_id):
            queued = await enqueue_watched_sync(
                ctx["redis"], follow_up.mailbox_id, defer_seconds=follow_up.defer_seconds
            )
            log.info(
                "worker.watched_follow_up_queued",
                extra={"mailbox_id": follow_up.mailbox_id, "queued": queued},
            )
    else:
        queued = await enqueue_sync(ctx["redis"], follow_up.mailbox_id, trigger=follow_up.trigger)
        log.info(
            "worker.follow_up_queued",
            extra={"mailbox_id": follow_up.mailbox_id, "queued": queued},
        )


def _state(ctx: JobContext) -> _WorkerState:
    state = ctx[_STATE]
    assert isinstance(state, _WorkerState), "on_startup sets the worker state"
    return state


def _due_mailbox_ids(engine: Engine) -> list[int]:
    with session_scope(engine) as session:
        return due_mailbox_ids(session, utcnow())


@dataclass(frozen=True, slots=True)
class _SyncTarget:
    host: str
    due: bool


def _sync_target(engine: Engine, mailbox_id: int) -> _SyncTarget | None:
    with session_scope(engine) as session:
        mailbox = get_mailbox(session, mailbox_id)
        if mailbox is None:
            return None
        due = mailbox.next_sync_at is None or mailbox.next_sync_at <= utcnow()
        return _SyncTarget(mailbox.host, due)


def _run_finished(engine: Engine, run_id: int) -> bool:
    with session_scope(engine) as session:
        run = session.get(SyncRun, run_id)
        return run is not None and run.status in {SyncRunStatus.SUCCEEDED, SyncRunStatus.FAILED}


def _fail_busy_run(engine: Engine, run_id: int) -> None:
    """Fail a run that never started because another worker kept the mailbox's lease."""
    with session_scope(engine) as session:
        run = session.get(SyncRun, run_id)
        if run is None or run.status is not SyncRunStatus.QUEUED:
            return  # started by a copy of this job, or already over
        run.status = SyncRunStatus.FAILED
        run.finished_at = utcnow()
        run.error_code = BUSY_ERROR_CODE
        run.error = "another worker kept the mailbox locked; try again later"
