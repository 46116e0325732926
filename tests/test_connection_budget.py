"""The connection budget in the machine's Redis, in this process and across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.connection_budget import (
    ConnectionBudget,
    ConnectionBudgetUnavailableError,
    NoConnectionSlotError,
    Pool,
    connection_budget,
)
from tests.support.redis_queue import TEST_REDIS_URL
from tests.support.worker_process import wait_until

HOST = "imap.example.com"


def budget_settings(queue_name: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": TEST_REDIS_URL,
        "queue_name": queue_name,
        "imap_max_connections_per_host": 2,
        "imap_max_connections_per_account": 10,
        "watch_max_connections_per_host": 1,
        "imap_slot_seconds": 2.0,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def assert_refused(budget: ConnectionBudget, pool: Pool, username: str, match: str) -> None:
    """Ask for a slot without waiting; fail unless it is refused with a `match`ing reason."""
    with (
        pytest.raises(NoConnectionSlotError, match=match),
        budget.slot(pool, HOST, username, wait=0),
    ):
        pass


def test_a_full_host_refuses_the_next_session_after_the_wait_saying_how_full(
    queue_name: str,
) -> None:
    budget = connection_budget(budget_settings(queue_name))

    with (
        budget.slot(Pool.IMAP, HOST, "ann", wait=0),
        budget.slot(Pool.IMAP, HOST.upper(), "bob", wait=0),
    ):
        started = time.monotonic()
        with (
            pytest.raises(NoConnectionSlotError) as refused,
            budget.slot(Pool.IMAP, HOST, "cy", wait=0.5),
        ):
            pass
        waited = time.monotonic() - started
        usage = budget.usage(Pool.IMAP, HOST)

    assert waited >= 0.5, "the caller waited for a slot before giving up"
    assert "2 of 2 per-host connections in use" in str(refused.value)
    assert refused.value.code == "waiting_for_connection_slot"
    assert usage.in_use == 2
    assert usage.holders == (f"{os.uname().nodename}:{os.getpid()}",)
    with budget.slot(Pool.IMAP, HOST, "cy", wait=0):  # both given back
        assert budget.usage(Pool.IMAP, HOST).in_use == 1


def test_a_waiting_session_gets_the_slot_given_back_meanwhile(queue_name: str) -> None:
    budget = connection_budget(budget_settings(queue_name, imap_max_connections_per_host=1))
    holder = budget.slot(Pool.IMAP, HOST, "ann", wait=0)
    holder.__enter__()
    release = threading.Timer(0.5, holder.__exit__, (None, None, None))
    release.start()
    try:
        with budget.slot(Pool.IMAP, HOST, "bob", wait=10):
            assert budget.usage(Pool.IMAP, HOST).in_use == 1
    finally:
        release.join()


def test_one_account_is_limited_across_pools_and_watch_sessions_have_their_own_host_cap(
    queue_name: str,
) -> None:
    budget = connection_budget(budget_settings(queue_name, imap_max_connections_per_account=2))

    with budget.slot(Pool.WATCH, HOST, "ann", wait=0), budget.slot(Pool.IMAP, HOST, "ann", wait=0):
        assert_refused(budget, Pool.IMAP, "ANN", "2 of 2 per-account")
        with budget.slot(Pool.IMAP, HOST, "bob", wait=0):  # another account: the host has room
            pass
        assert_refused(budget, Pool.WATCH, "bob", "1 of 1 per-host")
        assert budget.usage(Pool.IMAP, HOST).in_use == 1
        assert budget.usage(Pool.WATCH, HOST).in_use == 1


def test_a_held_slot_outlives_its_expiry_while_its_process_lives(queue_name: str) -> None:
    settings = budget_settings(queue_name, imap_max_connections_per_host=1)
    budget = connection_budget(settings)

    with budget.slot(Pool.IMAP, HOST, "ann", wait=0):
        time.sleep(3 * settings.imap_slot_seconds)
        assert_refused(budget, Pool.IMAP, "bob", "1 of 1 per-host")


_HOLD_A_SLOT = """
import sys, time
from app.config import Settings
from app.connection_budget import Pool, connection_budget
settings = Settings(
    redis_url=sys.argv[1], queue_name=sys.argv[2], imap_max_connections_per_host=3,
    imap_slot_seconds=2,
)
budget = connection_budget(settings)
with budget.slot(Pool.IMAP, "imap.example.com", "ann", wait=0), budget.slot(
    Pool.IMAP, "imap.example.com", "bob", wait=0
):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_killed_process_frees_its_slots_within_their_expiry(
    queue_name: str, tmp_path: Path
) -> None:
    settings = budget_settings(queue_name, imap_max_connections_per_host=3)
    budget = connection_budget(settings)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_SLOT, TEST_REDIS_URL, queue_name],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        cwd=tmp_path,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"holding\n", "the other process took its slots"
        time.sleep(2 * settings.imap_slot_seconds)  # renewed meanwhile: still held
        assert budget.usage(Pool.IMAP, HOST).in_use == 2
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        wait_until(
            lambda: budget.usage(Pool.IMAP, HOST).in_use == 0,
            seconds=20,
            what="the killed process's slots expire",
        )
        freed_after = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()

    assert freed_after <= settings.imap_slot_seconds + 2, f"freed after {freed_after:.1f} s"


def test_redis_down_refuses_the_session(queue_name: str) -> None:
    budget = connection_budget(budget_settings(queue_name, redis_url="redis://127.0.0.1:1/0"))

    with pytest.raises(ConnectionBudgetUnavailableError), budget.slot(Pool.IMAP, HOST, "a", wait=0):
        pass


def test_without_redis_a_lone_process_keeps_the_limits_itself(
    queue_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a fresh machine: no embedded Redis is running
    budget = connection_budget(
        budget_settings(queue_name, redis_url=None, imap_max_connections_per_host=1)
    )

    with budget.slot(Pool.IMAP, HOST, "ann", wait=0):
        assert_refused(budget, Pool.IMAP, "bob", "1 of 1 per-host")
    with budget.slot(Pool.IMAP, HOST, "bob", wait=0):
        pass
    assert not (tmp_path / "var").exists(), "no Redis was started for the budget"
