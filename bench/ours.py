"""Our sync engine, measured as the worker runs it: `sync_mailbox` against a real database.

The time budget is lifted so that a first sync is one run, measured end to end
(fetch, MIME parse, rows written, checkpoints advanced). Every other setting
is the service's default, read from the environment like the service does:
`SYNC_BATCH_SIZE=500 make bench` measures another batch size. The process runs
at the worker's niceness (WORKER_NICENESS), as the worker's syncs do.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from time import perf_counter

from pydantic import SecretStr

from app.config import Settings
from app.db import create_db_engine
from app.process_priority import lower_cpu_priority
from app.sync.service import sync_mailbox
from bench.job import Job, Measurement, folder_scoped, median_run

SYNC_TIME_BUDGET = timedelta(hours=2)
_COMMAND_LOGGER = "app.imap.connection"


class _CommandLog(logging.Handler):
    """Collect the "imap.command" records the connection layer logs at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.commands: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "imap.command":
            self.commands.append(str(getattr(record, "command", "?")))


def bench_settings(job: Job) -> Settings:
    """The service's settings for this job's database and server (TLS or plain IMAP)."""
    assert job.database_url is not None
    assert job.secret_key is not None
    return Settings(
        database_url=job.database_url,
        secret_keys=[SecretStr(job.secret_key)],
        imap_allow_private_hosts=True,
        imap_allow_plaintext=job.server.plain,
        imap_ca_file=None if job.server.plain else Path(job.server.ca_file),
        sync_time_budget_seconds=SYNC_TIME_BUDGET.total_seconds(),
    )


def sync_with_ours(job: Job) -> Measurement:
    """Run `sync_mailbox`: a first sync on a new database, a resync on one already synced."""
    assert job.database_url is not None
    assert job.mailbox_id is not None
    settings = bench_settings(job)
    lower_cpu_priority(settings.worker_niceness)  # as `imap-bridge worker` runs its syncs
    engine = create_db_engine(job.database_url)
    command_log = _CommandLog()
    logger = logging.getLogger(_COMMAND_LOGGER)
    logger.addHandler(command_log)
    logger.setLevel(logging.DEBUG)
    runs: list[Measurement] = []
    try:
        for _ in range(job.repeat):
            command_log.commands.clear()
            started = perf_counter()
            result = sync_mailbox(engine, job.mailbox_id, settings)
            seconds = perf_counter() - started
            if result is None or not result.complete or result.error_code:
                raise RuntimeError(f"the sync did not complete: {result}")
            commands = list(command_log.commands)
            runs.append(
                Measurement(
                    seconds,
                    result.counts.new,
                    result.counts.bytes,
                    command_count=len(commands),
                    folder_commands=folder_scoped(commands),
                    commands=commands,
                    flags_changed=result.counts.flags_changed,
                )
            )
    finally:
        logger.removeHandler(command_log)
        engine.dispose()
    return median_run(runs)
