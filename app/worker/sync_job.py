"""The job that syncs one mailbox, and the follow-up it leaves when its budget runs out.

The job's path through leases, outages and the watcher's folders is drawn in
the package docstring (app.worker); this module is that drawing in code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from arq import ArqRedis, Retry
from arq.constants import in_progress_key_prefix
from sqlalchemy.engine import Engine

from app.backoff import Backoff
from app.correlation import correlation_scope, current_correlation_id
from app.db import session_scope
from app.db.models import SyncRunStatus, SyncTrigger, utcnow
from app.db.repositories.mailboxes import get_mailbox
from app.db.repositories.sync_runs import fail_queued_sync_run, get_sync_run
from app.job_queue import (
    REDIS_ERRORS,
    enqueue_dispatch,
    enqueue_sync,
    enqueue_watched_sync,
    pending_folders_exist,
    take_pending_folders,
    until_redis_answers,
)
from app.sync.errors import DatabaseUnavailableError, MailboxNotFoundError, database_outages
from app.sync.service import sync_mailbox
from app.worker.state import JobContext, WorkerState, worker_state

log = logging.getLogger(__name__)

BUSY_ERROR_CODE = "busy"
_FOLLOW_UP = "imap_bridge.follow_up"
# A watched sync that found the mailbox leased (a scheduled sync runs) tries again after this.
_WATCHED_RETRY_SECONDS = 5.0

_DATABASE_RETRY = Backoff(first=2, cap=60)


@dataclass(slots=True)
class _FollowUp:
    mailbox_id: int
    trigger: SyncTrigger
    watched: bool = False  # queue a watched sync if changed folders wait, after `defer_seconds`
    defer_seconds: float = 0
    correlation_id: str | None = field(default_factory=current_correlation_id)  # the job's


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
    """Sync one mailbox in a thread; safe to run twice.

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
            _job_claim_kept_short(ctx, worker_state(ctx).settings.sync_lease_seconds),
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
    state = worker_state(ctx)
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
    except MailboxNotFoundError:  # deleted since it was looked up
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


def _mailbox_deleted(facts: dict[str, Any]) -> str:
    log.info("worker.mailbox_gone", extra=facts)
    return "mailbox deleted"


async def _lease_held(
    ctx: JobContext, state: WorkerState, run_id: int | None, facts: dict[str, Any]
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


async def enqueue_follow_up(ctx: JobContext) -> None:
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


@dataclass(frozen=True, slots=True)
class _SyncTarget:
    due: bool


def _sync_target(engine: Engine, mailbox_id: int) -> _SyncTarget | None:
    with session_scope(engine) as session:
        mailbox = get_mailbox(session, mailbox_id)
        if mailbox is None:
            return None
        due = mailbox.next_sync_at is None or mailbox.next_sync_at <= utcnow()
        return _SyncTarget(due)


def _run_finished(engine: Engine, run_id: int) -> bool:
    with session_scope(engine) as session:
        run = get_sync_run(session, run_id)
        return run is not None and run.status in {SyncRunStatus.SUCCEEDED, SyncRunStatus.FAILED}


def _fail_busy_run(engine: Engine, run_id: int) -> None:
    """Fail a run that never started because another worker kept the mailbox's lease.

    One a copy of this job started, or that is already over, is left alone.
    """
    with session_scope(engine) as session:
        fail_queued_sync_run(
            session,
            run_id,
            error_code=BUSY_ERROR_CODE,
            error="another worker kept the mailbox locked; try again later",
            now=utcnow(),
        )
