"""What a worker process keeps between jobs: its settings, engine, host slots and busy retry.

arq hands every job the same context dict; `on_startup` puts one `WorkerState`
in it, and the jobs read it back through `worker_state(ctx)`. It belongs to the
process, not to an arq Worker: the supervisor's next Worker after a Redis
outage finds it in place (app.supervised_worker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from app.config import Settings

JobContext = dict[Any, Any]

STATE_KEY = "imap_bridge.state"


@dataclass(frozen=True, slots=True)
class BusyRetry:
    """How long a requested run waits for a lease that another worker holds."""

    delay_seconds: float
    attempts: int

    @classmethod
    def covering(cls, lease_seconds: float, delay_seconds: float = 30.0) -> BusyRetry:
        """Wait as long as a crashed holder's lease can last, so only a live holder fails a run."""
        return cls(delay_seconds, max(1, math.ceil(lease_seconds / delay_seconds)))


@dataclass(slots=True)
class WorkerState:
    """The process's share of every job: settings, database engine, busy retries."""

    settings: Settings
    busy_retry: BusyRetry
    engine: Engine


def worker_state(ctx: JobContext) -> WorkerState:
    """Return the state `on_startup` put in the job context."""
    state = ctx[STATE_KEY]
    assert isinstance(state, WorkerState), "on_startup sets the worker state"
    return state
