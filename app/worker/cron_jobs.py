"""The jobs the cron runs: queue the mailboxes that are due, deliver the outbox, prune runs.

`dispatch_events_job` is also queued after every sync job, whose events are
committed by then; its cron runs every 10 seconds for the events other
processes wrote and the retries that fell due.
"""

from __future__ import annotations

import asyncio
import logging
import time

from arq import ArqRedis
from sqlalchemy.engine import Engine

from app.db import session_scope
from app.db.models import utcnow
from app.db.repositories.mailboxes import due_mailbox_ids
from app.db.repositories.sync_runs import prune_sync_runs
from app.job_queue import enqueue_sync
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from app.sync.errors import DatabaseUnavailableError, database_outages
from app.worker.state import JobContext, worker_state

log = logging.getLogger(__name__)

_DISPATCH_BUDGET_SECONDS = 50  # a pass over the outbox, then the next cron tick continues


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
    """Cron entry point: queue the due mailboxes.

    With the database away, one warning and no traceback: the next minute's tick
    reads the due list again, and nothing was queued from a half-read one.
    """
    try:
        with database_outages():
            return len(await enqueue_due_syncs(ctx["redis"], worker_state(ctx).engine))
    except DatabaseUnavailableError as exc:
        log.warning("worker.due_database_unavailable", extra={"reason": str(exc)})
        return 0


async def dispatch_events_job(ctx: JobContext) -> str:
    """Deliver the outbox (app.notify.dispatcher), pass after pass while passes find work.

    With the database away, a pass ends with one warning, no traceback: the next
    tick, ten seconds on, tries again, and what the pass had claimed is claimed again
    once its claim runs out.
    """
    state = worker_state(ctx)
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


async def prune_sync_runs_job(ctx: JobContext) -> int:
    """Cron entry point: delete the runs beyond SYNC_RUNS_KEPT_PER_MAILBOX; return how many."""
    state = worker_state(ctx)
    try:
        with database_outages():
            pruned = await asyncio.to_thread(
                prune_old_sync_runs, state.engine, state.settings.sync_runs_kept_per_mailbox
            )
    except DatabaseUnavailableError as exc:
        log.warning("worker.prune_database_unavailable", extra={"reason": str(exc)})
        return 0
    log.info("worker.sync_runs_pruned", extra={"pruned": pruned})
    return pruned


def prune_old_sync_runs(engine: Engine, keep: int) -> int:
    """Prune every mailbox's run history in one transaction; return how many runs went."""
    with session_scope(engine) as session:
        return prune_sync_runs(session, keep=keep)


def _due_mailbox_ids(engine: Engine) -> list[int]:
    with session_scope(engine) as session:
        return due_mailbox_ids(session, utcnow())
