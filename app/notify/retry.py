"""When a failed delivery is tried again: exponential backoff with jitter, for about a day.

    attempt      1    2     3      4     5     6      7      8
    then wait    5 s  5 min 30 min 2 h   5 h   10 h   10 h   give up   (27.6 h in all)

Each wait is stretched or shrunk by up to 20 % at random, so deliveries that
failed together (a receiver's outage) do not all come back in the same second.
A receiver's `Retry-After` is honoured: the wait is never shorter than it asks,
up to a day.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
JITTER = 0.2
MAX_RETRY_AFTER = timedelta(days=1)


def next_attempt_at(
    attempt: int, now: datetime, *, retry_after: timedelta | None = None
) -> datetime | None:
    """Return when to try after failed attempt number `attempt` (from 1); None: give up."""
    if attempt > len(RETRY_DELAYS):
        return None
    delay = RETRY_DELAYS[attempt - 1] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return now + delay
