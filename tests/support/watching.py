"""Run the watcher's supervisor inside a test and read what it logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.watch.supervisor import WatchSupervisor


@asynccontextmanager
async def supervising(settings: Settings, engine: Engine) -> AsyncIterator[WatchSupervisor]:
    """Run a supervisor (its own owner id) until the block ends."""
    supervisor = WatchSupervisor(settings, engine)
    task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor
    finally:
        supervisor.stop()
        await task


def watching_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == "watch.watching"]
