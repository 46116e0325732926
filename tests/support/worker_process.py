"""`imap-bridge worker` (or `watch`) in a subprocess, configured by the environment alone;
queueing a sync for it as the cron does, and waiting for what it does."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from arq import ArqRedis, Worker

from app.config import Settings
from app.job_queue import create_queue, enqueue_sync
from app.worker import worker_settings
from app.worker.state import BusyRetry


@dataclass
class WorkerProcess:
    """`imap-bridge worker` in a subprocess; its log goes to a file."""

    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.process.poll() is None


@contextmanager
def worker_process(
    settings: Settings,
    workdir: Path,
    *,
    environment: dict[str, str] | None = None,
    launcher: Sequence[str] = (),
    command: str = "worker",
) -> Iterator[WorkerProcess]:
    """Run `imap-bridge worker` (behind `launcher`, say `nice -n 5`); SIGTERM it at the end.

    `environment` adds variables to those the settings give; `command` runs
    another long-lived command (`watch`) the same way, logging to `<command>.log`.
    """
    assert settings.redis_url is not None
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "QUEUE_NAME": settings.queue_name,
        "SECRET_KEYS": ",".join(key.get_secret_value() for key in settings.secret_keys),
        "IMAP_ALLOW_PRIVATE_HOSTS": "true",
        "IMAP_ALLOW_PLAINTEXT": str(settings.imap_allow_plaintext).lower(),
        "IMAP_CA_FILE": str(settings.imap_ca_file),
        "SYNC_BATCH_SIZE": str(settings.sync_batch_size),
        "WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
        # Niced, a worker gets a sliver of a busy machine's cores: its start and stop
        # then outlast any deadline. The niceness test sets its own.
        "WORKER_NICENESS": "0",
        **(environment or {}),
    }
    log_file = workdir / f"{command}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*launcher, sys.executable, "-m", "app.cli", command],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_file)
    try:
        yield worker
    finally:
        if worker.running:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` until it holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.1)


@asynccontextmanager
async def open_queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    """The settings' queue, closed on leaving the block."""
    pool = await create_queue(settings)
    try:
        yield pool
    finally:
        await pool.aclose()


def enqueue(settings: Settings, mailbox_id: int) -> None:
    """Queue a sync of the mailbox as the cron does."""

    async def queue() -> None:
        async with open_queue(settings) as pool:
            assert await enqueue_sync(pool, mailbox_id), "no sync of the mailbox is queued yet"

    asyncio.run(queue())


async def drain_queue(
    settings: Settings,
    queue_name: str | None = None,
    *,
    busy_retry: BusyRetry | None = None,
    cron: bool = True,
) -> None:
    """Run a real arq worker in this process until its queue is empty (arq's burst mode)."""
    options = worker_settings(settings, queue_name=queue_name, busy_retry=busy_retry)
    if not cron:
        options["cron_jobs"] = []
    worker = Worker(**options, burst=True, poll_delay=0.02, handle_signals=False)
    try:
        await worker.async_run()
    finally:
        await worker.close()


def run_worker(settings: Settings) -> None:
    """Run every queued job, then stop (no cron).

    A job that finds the mailbox leased by another job retries after 50 ms, not 30 s.
    """
    fast_retry = BusyRetry(delay_seconds=0.05, attempts=200)
    asyncio.run(drain_queue(settings, busy_retry=fast_retry, cron=False))
