"""Write fetched batches on a thread of their own, in order, while the next batch is fetched.

    caller (IMAP, MIME parse):  fetch 1 | fetch 2 | fetch 3 | ...     | finish
    writer (one transaction each):      | write 1 | write 2 | write 3 |

The database's own work (SQLite's C library, which lets go of the interpreter
lock, or the PostgreSQL server) then runs on one core while reading and
parsing mail keep the interpreter busy on another. Writes run one at a time in
the order submitted, so checkpoints advance exactly as they would inline.

A failed write stops the writer: every write queued behind it is skipped,
never committed past the gap (its checkpoint would jump over the failed
batch's mail), and the error reaches the caller at its next `submit` or at
`finish`. Leaving the block waits for the write in progress and those queued
before any failure: mail already fetched is still stored when the caller stops
early.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class _Skipped(Exception):
    """A write queued behind a failed one; the caller sees the failure first."""


class BatchWriter(Generic[T]):
    """Run writes one at a time on a background thread, at most `ahead` behind the caller."""

    def __init__(self, *, ahead: int) -> None:
        self._ahead = ahead
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-writer")
        self._pending: deque[Future[T]] = deque()
        self._failed = threading.Event()

    def __enter__(self) -> BatchWriter[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._executor.shutdown(wait=True)

    def submit(self, write: Callable[[], T]) -> list[T]:
        """Queue `write`; return the results of writes done, waiting while too many are queued.

        Raises the error of the first write that failed.
        """
        # In the caller's context: rows and log lines keep its correlation id (app.correlation).
        context = contextvars.copy_context()
        self._pending.append(self._executor.submit(context.run, self._run, write))
        return self._collect(keep=self._ahead)

    def finish(self) -> list[T]:
        """Wait for every queued write; return the results not returned yet."""
        return self._collect(keep=0)

    def _collect(self, keep: int) -> list[T]:
        results = []
        while len(self._pending) > keep:
            results.append(self._pending.popleft().result())
        return results

    def _run(self, write: Callable[[], T]) -> T:
        if self._failed.is_set():
            raise _Skipped
        try:
            return write()
        except BaseException:
            self._failed.set()
            raise
