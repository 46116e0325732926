"""The worker process: one arq Worker polling at a time, a new one after every Redis outage.

    `imap-bridge worker`, `imap-bridge run`: SupervisedWorker
      connect to Redis; an arq Worker polls the queue (app.worker's jobs and crons)
      Redis stops answering .................... `worker.redis_unavailable`; the running
                                                 jobs go on; after a backoff (1 s doubling
                                                 to 10 s) a new arq Worker polls again
      SIGINT / SIGTERM ......................... cancel the jobs (arq queues them again)

arq 0.28 catches nothing in its poll loop: a Redis command that fails there
ends `Worker.main()`, and `Worker.run()` with it, while the jobs it started run
on; a Worker's own bookkeeping (its job count, its semaphore) may be left off
by a job it was starting. So `SupervisedWorker` never resumes a Worker: it
starts a new one on the same Redis pool and context (engine, threads, host
slots), and lets the old one's jobs finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import replace

from arq import ArqRedis, Worker, create_pool

from app.job_queue import REDIS_ERRORS, REDIS_RETRY
from app.worker import JobContext, WorkerSettings

log = logging.getLogger(__name__)


class SupervisedWorker:
    """The process's arq worker, polling again after every Redis outage (see the module doc)."""

    def __init__(self, options: WorkerSettings, *, poll_delay: float = 0.5) -> None:
        self._options = options
        self._poll_delay = poll_delay
        self._ctx: JobContext = {}
        self._pool: ArqRedis | None = None
        self._workers: list[Worker] = []  # the polling one last; the others finish their jobs
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False

    @property
    def running_jobs(self) -> int:
        return sum(not task.done() for worker in self._workers for task in worker.tasks.values())

    async def run(self) -> None:
        """Poll the queue until `stop()`, through any number of Redis outages."""
        try:
            await self._options["on_startup"](self._ctx)
            self._started = True
            failures = 0
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    await self._poll()
                except REDIS_ERRORS as exc:
                    lasted = time.monotonic() - started > REDIS_RETRY.cap
                    failures = 1 if lasted else failures + 1
                    delay = REDIS_RETRY.delay(failures)
                    log.warning(
                        "worker.redis_unavailable",
                        extra={
                            "error": type(exc).__name__,
                            "retry_in": delay,
                            "running_jobs": self.running_jobs,
                        },
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._stopped.set()

    def stop(self) -> None:
        """Stop polling and cancel the running jobs (arq queues them again); see `close()`."""
        self._stopping.set()
        for worker in self._workers:
            for task in worker.tasks.values():
                task.cancel()
            if worker.main_task is not None:
                worker.main_task.cancel()

    async def close(self) -> None:
        """Stop, wait for the cancelled jobs to be queued again, then close Redis and the engine."""
        self.stop()
        if self._started:
            await self._stopped.wait()
        await asyncio.gather(
            *(task for worker in self._workers for task in worker.tasks.values()),
            return_exceptions=True,
        )
        if self._pool is not None:
            if self._workers:  # as arq's Worker.close(), unless Redis does not answer
                with contextlib.suppress(*REDIS_ERRORS):  # (TimeoutError is one of them)
                    async with asyncio.timeout(REDIS_RETRY.cap):
                        await self._pool.delete(self._workers[-1].health_check_key)
            await self._pool.aclose()
        if self._started:
            await self._options["on_shutdown"](self._ctx)

    async def run_until_signalled(self) -> None:
        """Run until SIGINT or SIGTERM, then close: the `imap-bridge worker` command."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        try:
            await self.run()
        finally:
            await self.close()

    async def _poll(self) -> None:
        """Connect if need be, then let a new arq Worker poll until Redis fails or `stop()`."""
        if self._pool is None:
            # One attempt per call: the backoff between attempts is run()'s, and it is logged.
            where = replace(self._options["redis_settings"], conn_retries=0)
            self._pool = await create_pool(where, default_queue_name=self._options["queue_name"])
        self._forget_finished_workers()
        if self._stopping.is_set():
            return
        worker = Worker(
            **self._options,
            redis_pool=self._pool,
            ctx=self._ctx,
            handle_signals=False,
            poll_delay=self._poll_delay,
        )
        self._workers.append(worker)
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise  # this task was cancelled, not the Worker by stop()

    def _forget_finished_workers(self) -> None:
        """Drop replaced Workers whose jobs all ended; log the jobs whose end arq lost."""
        for worker in [w for w in self._workers if all(t.done() for t in w.tasks.values())]:
            self._workers.remove(worker)
            for job_id, task in worker.tasks.items():
                error = None if task.cancelled() else task.exception()
                if error is not None:  # Redis failed at the end: arq runs it again later
                    log.warning(
                        "worker.job_end_unrecorded",
                        extra={"job_id": job_id, "error": type(error).__name__},
                    )
