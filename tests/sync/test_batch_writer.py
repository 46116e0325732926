"""The background writer: in order, alongside the caller, and never past a failed write."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from app.sync.batch_writer import BatchWriter

WAIT = 10.0


class WriteFailedError(Exception):
    pass


def recording(written: list[int], value: int) -> Callable[[], int]:
    """Return a write that records `value` in `written` and returns it."""

    def write() -> int:
        written.append(value)
        return value

    return write


def test_writes_run_in_order_while_the_caller_goes_on() -> None:
    written: list[int] = []
    first_may_finish = threading.Event()

    def first() -> int:
        assert first_may_finish.wait(WAIT), "the caller never came back"
        written.append(1)
        return 1

    with BatchWriter[int](ahead=1) as writer:
        assert writer.submit(first) == []  # returned while the write is still running
        first_may_finish.set()
        done = writer.submit(recording(written, 2))
        assert done + writer.finish() == [1, 2]
    assert written == [1, 2]


def test_ahead_zero_waits_for_each_write() -> None:
    with BatchWriter[str](ahead=0) as writer:
        assert writer.submit(lambda: "a") == ["a"]
        assert writer.submit(lambda: "b") == ["b"]
        assert writer.finish() == []


def test_a_failed_write_stops_every_write_queued_behind_it() -> None:
    written: list[int] = []
    failing_may_start = threading.Event()

    def failing() -> int:
        assert failing_may_start.wait(WAIT)
        raise WriteFailedError

    with BatchWriter[int](ahead=2) as writer:
        writer.submit(recording(written, 1))
        writer.submit(failing)
        writer.submit(recording(written, 3))  # queued behind the failing write: never runs
        failing_may_start.set()
        with pytest.raises(WriteFailedError):
            writer.finish()
    assert written == [1]


def test_leaving_early_still_stores_what_was_queued() -> None:
    written: list[int] = []
    release = threading.Event()

    def slow() -> int:
        assert release.wait(WAIT)
        written.append(1)
        return 1

    class CallerStoppedError(Exception):
        """The caller gave up mid-run (an IMAP error, a signal)."""

    def stop_early() -> None:
        with BatchWriter[int](ahead=1) as writer:
            writer.submit(slow)
            threading.Timer(0.2, release.set).start()  # the write ends after the caller left
            raise CallerStoppedError

    with pytest.raises(CallerStoppedError):
        stop_early()
    assert written == [1]
