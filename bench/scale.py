"""The cron path at scale: `imap-bridge worker` processes sync every mailbox of a database.

    this child: start the workers (subprocesses, the job's Redis queue) -> wait until
                each has logged "Starting worker"
                -> mark every mailbox due (next_sync_at = now)
                -> clock starts; enqueue_due_syncs(), the function the workers' cron
                   calls at second 0 of each minute, queues a sync job per mailbox
                -> poll the database until no mailbox is due or leased any more
                -> clock stops at the last run's finished_at
                -> peak RSS of each worker (VmHWM), then SIGTERM

The cycle is triggered from here rather than by the workers' own tick, so it
starts at a known instant; a tick that falls inside the cycle finds every job
already queued (the job id makes a second enqueue a no-op). A run cut short by
its time budget leaves its mailbox due, so the cycle ends only when every
follow-up is done too. The same operation measures a first cycle (nothing
synced yet) and a no-change cycle (run again on the same database).

Errors are runs that failed, mailboxes still unfinished at the deadline,
error lines in the workers' logs and workers that exited. The workers log JSON
lines (`LOG_FORMAT=json`); an error line is one at ERROR or above, or one that
is not JSON at all (a traceback a thread printed past the logging setup).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import Mailbox, SyncRun, SyncRunStatus, utcnow
from app.job_queue import create_queue
from app.worker.cron_jobs import enqueue_due_syncs
from bench.child import vm_hwm_kb
from bench.job import Fleet, Job, Measurement, service_environment

SERVICE_COMMAND = str(Path(sys.executable).with_name("imap-bridge"))
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_READY_LINE = "Starting worker"
_READY_SECONDS = 600.0  # a deadline only: niced workers on a busy machine start slowly
_STOP_SECONDS = 30.0
_POLL_SECONDS = 0.1
_ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})


def fleet_of(job: Job) -> Fleet:
    assert job.fleet is not None, "a cron-path job describes its fleet"
    return job.fleet


def fleet_environment(job: Job) -> dict[str, str]:
    """The environment of the service's processes, as an operator would set it."""
    fleet = fleet_of(job)
    return {
        **service_environment(job),
        "REDIS_URL": fleet.redis_url,
        "QUEUE_NAME": fleet.queue_name,
        "LOG_FORMAT": "json",  # error_lines() reads the workers' logs
        "SYNC_MAX_JOBS": str(fleet.max_jobs),
        "IMAP_MAX_CONNECTIONS_PER_HOST": str(fleet.connections_per_host),
    }


def service_settings(job: Job) -> Settings:
    """The same settings in this process, for enqueueing and for reading the database."""
    assert job.database_url is not None
    assert job.secret_key is not None
    fleet = fleet_of(job)
    return Settings(
        database_url=job.database_url,
        redis_url=fleet.redis_url,
        queue_name=fleet.queue_name,
        secret_keys=[SecretStr(job.secret_key)],
    )


class Workers:
    """`imap-bridge worker` subprocesses, each logging to its own file under `scratch`."""

    def __init__(self, job: Job, scratch: Path) -> None:
        self.environment = fleet_environment(job)
        self.logs = [scratch / f"worker-{n + 1}.log" for n in range(fleet_of(job).workers)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.peaks_kb: list[int] = []
        self.exited = 0
        self.cpu_at_start = 0.0
        self.cpu_seconds = 0.0  # used by the workers between start() and stop(), imports aside

    def start(self) -> None:
        for log in self.logs:
            with log.open("wb") as output:
                self.processes.append(
                    subprocess.Popen(
                        [SERVICE_COMMAND, "worker"],
                        cwd=_PROJECT_ROOT,
                        env=self.environment,
                        stdout=output,
                        stderr=output,
                    )
                )
        deadline = time.monotonic() + _READY_SECONDS
        waiting = list(zip(self.processes, self.logs, strict=True))
        while waiting:
            process, log = waiting[0]
            if process.poll() is not None:
                raise RuntimeError(f"a worker exited {process.returncode}: {_tail(log)}")
            if _READY_LINE in log.read_text(errors="replace"):
                waiting.pop(0)
            elif time.monotonic() > deadline:
                raise RuntimeError(f"a worker was not ready within {_READY_SECONDS:.0f} s")
            else:
                time.sleep(0.05)
        self.cpu_at_start = self._cpu()

    def _cpu(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def stop(self) -> None:
        """Record each worker's peak RSS, CPU time and whether it died, then stop it (SIGTERM)."""
        self.peaks_kb = [vm_hwm_kb(Path(f"/proc/{p.pid}/status")) for p in self.processes]
        self.exited = sum(p.poll() is not None for p in self.processes)
        self.cpu_seconds = self._cpu() - self.cpu_at_start
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def figures(self) -> dict[str, float]:
        return {
            **{f"worker {n + 1} peak RSS kB": kb for n, kb in enumerate(self.peaks_kb)},
            "log errors": len(error_lines(self.logs)),
            "workers exited": self.exited,
            "worker CPU s": self.cpu_seconds,
        }


def error_lines(logs: Iterable[Path]) -> list[str]:
    """Return the lines of JSON logs at ERROR or above, and those that are not JSON."""
    return [
        line
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if line.strip() and _is_error(line)
    ]


def _is_error(line: str) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return True
    return not isinstance(record, dict) or record.get("level") in _ERROR_LEVELS


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of a running process (all its threads), else 0."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the command name: state is field 3 of stat(5), utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def running_workers(job: Job, scratch: Path) -> Iterator[Workers]:
    workers = Workers(job, scratch)
    try:
        workers.start()
        yield workers
    finally:
        workers.stop()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


@dataclass(frozen=True, slots=True)
class CycleOutcome:
    """What one cycle did, from the `sync_run` rows it left."""

    seconds: float
    mailboxes: int
    succeeded: int  # mailboxes with a succeeded run in the cycle
    failed_runs: int
    runs: int  # more than `succeeded` when a run ran out of time and a follow-up continued it
    unfinished: int  # mailboxes still due or leased at the deadline
    messages: int
    bytes: int
    queued: int
    enqueue_seconds: float

    def figures(self) -> dict[str, float]:
        return {
            "mailboxes": self.mailboxes,
            "succeeded": self.succeeded,
            "failed runs": self.failed_runs,
            "runs": self.runs,
            "unfinished": self.unfinished,
            "queued": self.queued,
            "enqueue s": self.enqueue_seconds,
        }


async def run_cycle(settings: Settings, engine: Engine, timeout_seconds: float) -> CycleOutcome:
    """Mark every mailbox due, queue them as the cron does, wait until each one's run is over."""
    before = await asyncio.to_thread(_last_run_id, engine)
    mailboxes = await asyncio.to_thread(_mark_all_due, engine)
    queue = await create_queue(settings)
    try:
        started_at = utcnow()
        started = perf_counter()
        queued = await enqueue_due_syncs(queue, engine)
        enqueue_seconds = perf_counter() - started
        deadline = started + timeout_seconds
        unfinished = mailboxes
        while unfinished and perf_counter() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            unfinished = await asyncio.to_thread(_unfinished, engine)
        waited = perf_counter() - started
    finally:
        await queue.aclose()
    runs = await asyncio.to_thread(_runs_after, engine, before)
    last = runs.last_finished
    seconds = (_aware(last) - started_at).total_seconds() if last and not unfinished else waited
    return CycleOutcome(
        seconds=seconds,
        mailboxes=mailboxes,
        succeeded=runs.succeeded_mailboxes,
        failed_runs=runs.failed,
        runs=runs.count,
        unfinished=unfinished,
        messages=runs.new,
        bytes=runs.bytes,
        queued=len(queued),
        enqueue_seconds=enqueue_seconds,
    )


@dataclass(frozen=True, slots=True)
class _Runs:
    count: int
    succeeded_mailboxes: int
    failed: int
    new: int
    bytes: int
    last_finished: datetime | None


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored one is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _last_run_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.exec(select(sa.func.max(SyncRun.id))).one() or 0


def _mark_all_due(engine: Engine) -> int:
    """Make every mailbox due now, as the passing of its interval would; return how many."""
    with session_scope(engine) as session:
        session.execute(sa.update(Mailbox).values(next_sync_at=utcnow()))
        return session.exec(select(sa.func.count()).select_from(Mailbox)).one()


def _unfinished(engine: Engine) -> int:
    """Count mailboxes still due (not synced yet, or cut short by the time budget) or leased."""
    now = utcnow()
    with session_scope(engine) as session:
        statement = (
            select(sa.func.count())
            .select_from(Mailbox)
            .where(
                sa.or_(
                    col(Mailbox.next_sync_at).is_(None),
                    col(Mailbox.next_sync_at) <= now,
                    col(Mailbox.lease_owner).is_not(None),
                )
            )
        )
        return session.exec(statement).one()


def _runs_after(engine: Engine, run_id: int) -> _Runs:
    succeeded = col(SyncRun.status) == SyncRunStatus.SUCCEEDED
    with session_scope(engine) as session:
        count, succeeded_mailboxes, failed, new, fetched, last = session.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.distinct(sa.case((succeeded, SyncRun.mailbox_id)))),
                sa.func.count(sa.case((col(SyncRun.status) == SyncRunStatus.FAILED, 1))),
                sa.func.coalesce(sa.func.sum(SyncRun.new), 0),
                sa.func.coalesce(sa.func.sum(SyncRun.bytes_fetched), 0),
                sa.func.max(SyncRun.finished_at),
            ).where(col(SyncRun.id) > run_id)
        ).one()
    # PostgreSQL sums to Decimal
    return _Runs(count, succeeded_mailboxes, failed, int(new), int(fetched), last)


def cycle_measurement(outcome: CycleOutcome, workers: Workers) -> Measurement:
    """One cron-path row: the cycle's figures and the workers'."""
    figures = {**outcome.figures(), **workers.figures()}
    figures["errors"] = (
        outcome.failed_runs + outcome.unfinished + figures["log errors"] + workers.exited
    )
    return Measurement(
        outcome.seconds,
        outcome.messages,
        outcome.bytes,
        peak_rss_kb=max(workers.peaks_kb, default=0),
        figures=figures,
    )


def cron_cycle(job: Job) -> Measurement:
    """Run one cycle over every mailbox of the job's database on the fleet's workers."""
    assert job.scratch_dir is not None
    settings = service_settings(job)
    engine = create_db_engine(settings.database_url)
    try:
        with running_workers(job, Path(job.scratch_dir)) as workers:
            outcome = asyncio.run(run_cycle(settings, engine, fleet_of(job).timeout_seconds))
    finally:
        engine.dispose()
    return cycle_measurement(outcome, workers)
