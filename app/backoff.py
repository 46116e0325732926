"""Exponential backoff: how long to wait before the next attempt after a failure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays in seconds that double from `first` up to `cap`: attempt 1 waits `first`."""

    first: float
    cap: float

    def delay(self, attempt: int) -> float:
        return min(self.first * 2.0 ** min(max(attempt, 1) - 1, 30), self.cap)
