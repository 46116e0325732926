"""One budget of IMAP connections per server host and per account, shared by every process.

    slot(pool, host, username, wait):
      take one slot in the pool's set of the host and one in the account's set,
      atomically (a Lua script in Redis):
        drop the slots whose expiry passed from both sets
        both under their limits --> add this slot to both, expiring in IMAP_SLOT_SECONDS
        either full ----------------> try again (0.1 s doubling to 1 s) until `wait`
                                      has passed, then NoConnectionSlotError, which says
                                      how many of how many slots are in use
      Redis does not answer -------> ConnectionBudgetUnavailableError
      held: one thread per process pushes every held slot's expiry out, every third
        of IMAP_SLOT_SECONDS; a process that dies (SIGKILL, a lost machine) stops
        pushing, and its slots expire within IMAP_SLOT_SECONDS
      released on the way out (Redis down then: the slot expires by itself)

    pools      sessions                       limit per host
    imap       syncs and API requests         IMAP_MAX_CONNECTIONS_PER_HOST
    watch      the watcher's standing ones    WATCH_MAX_CONNECTIONS_PER_HOST
    every session also takes a slot of its account (host + username):
                                              IMAP_MAX_CONNECTIONS_PER_ACCOUNT

Where the budget lives (`connection_budget`): `REDIS_URL`'s Redis; unset, the
embedded Redis when a process of the service runs it (`imap-bridge run`,
`worker`, `watch`, `serve` start it), else this process alone keeps the same
limits (a lone `imap-bridge sync` needs no Redis). Keys are under
`<QUEUE_NAME>:budget:`, so deployments sharing a Redis keep separate budgets.
Slot expiry is counted in Redis's clock, so machines whose clocks differ agree.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import cast

import redis

from app.config import Settings
from app.job_queue import REDIS_ERRORS, running_embedded_redis

log = logging.getLogger(__name__)

_FIRST_RETRY_SECONDS = 0.1
_LONGEST_RETRY_SECONDS = 1.0
_REDIS_TIMEOUT_SECONDS = 5.0


class ConnectionBudgetError(Exception):
    """Base of the budget's failures: no session was opened; try again later."""

    code = "connection_budget_error"
    retry_after_seconds = 5


class NoConnectionSlotError(ConnectionBudgetError):
    """Every slot of the host or of the account was in use for as long as the caller waited."""

    code = "waiting_for_connection_slot"

    def __init__(self, host: str, full: Usage, waited: float) -> None:
        when = f"within {waited:g} s" if waited > 0 else "free"
        super().__init__(
            f"no connection slot to {host} {when}:"
            f" {full.in_use} of {full.limit} {full.scope} connections in use"
        )
        self.host = host
        self.usage = full


class ConnectionBudgetUnavailableError(ConnectionBudgetError):
    """Redis, which holds the budget shared by every process, does not answer."""

    code = "connection_budget_unavailable"
    retry_after_seconds = 10


class Pool(enum.Enum):
    """Which per-host limit a session counts against."""

    IMAP = "imap"  # syncs and API requests: open for a run or a request
    WATCH = "watch"  # the watcher's: open for as long as a mailbox is watched


@dataclass(frozen=True, slots=True)
class Usage:
    """How many slots of a limit are taken, and by which processes (`machine:pid`)."""

    scope: str  # "per-host" or "per-account"
    in_use: int
    limit: int
    holders: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Limits:
    imap_per_host: int
    watch_per_host: int
    per_account: int

    def per_host(self, pool: Pool) -> int:
        return self.imap_per_host if pool is Pool.IMAP else self.watch_per_host


@dataclass(frozen=True, slots=True)
class _Slot:
    token: str
    keys: tuple[str, ...]  # host set, then account set


# KEYS: the host's set, the account's set. ARGV: token, ttl ms, host limit, account limit.
# Returns {0} when taken, else {index of the full set, in use, limit}.
_TAKE = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local used = redis.call('ZCARD', key)
  local limit = tonumber(ARGV[2 + i])
  if used >= limit then return {i, used, limit} end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return {0}
"""

# KEYS: the sets of one held slot. ARGV: token, ttl ms. Returns how many sets had lost it.
_RENEW = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
local lost = 0
for _, key in ipairs(KEYS) do
  lost = lost + redis.call('ZADD', key, now + ttl, ARGV[1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return lost
"""

# KEYS: one set. Drops expired slots, returns the live ones.
_LIVE = """
redis.replicate_commands()
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class ConnectionBudget:
    """The slots of every IMAP session: take one before connecting, give it back after."""

    def __init__(self, limits: _Limits) -> None:
        self._limits = limits
        self._process = f"{socket.gethostname()}:{os.getpid()}"

    @contextlib.contextmanager
    def slot(self, pool: Pool, host: str, username: str, *, wait: float) -> Iterator[None]:
        """Hold a slot of `host` and of the account for the `with` block (module docstring)."""
        taken = self._take_waiting(pool, host, username, wait)
        try:
            yield
        finally:
            self._give_back(taken)

    @contextlib.asynccontextmanager
    async def slot_async(self, pool: Pool, host: str, username: str) -> AsyncIterator[None]:
        """Hold a slot for the `async with` block, without waiting for one (the watcher's)."""
        taken = await asyncio.to_thread(self._take_waiting, pool, host, username, 0.0)
        try:
            yield
        finally:
            await asyncio.to_thread(self._give_back, taken)

    def usage(self, pool: Pool, host: str) -> Usage:
        """Say how many of the host's slots in `pool` are taken, and by which processes."""
        tokens = self._live(self._host_key(pool, host))
        holders = tuple(sorted({token.rpartition(":")[0] for token in tokens}))
        return Usage("per-host", len(tokens), self._limits.per_host(pool), holders)

    def _take_waiting(self, pool: Pool, host: str, username: str, wait: float) -> _Slot:
        host = host.casefold()
        slot = _Slot(
            f"{self._process}:{uuid.uuid4().hex[:12]}",
            (self._host_key(pool, host), self._account_key(host, username.casefold())),
        )
        limits = (self._limits.per_host(pool), self._limits.per_account)
        deadline = time.monotonic() + wait
        delay = _FIRST_RETRY_SECONDS
        while True:
            full = self._take(slot, limits)
            if full is None:
                return slot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.info(
                    "budget.no_slot",
                    extra={"host": host, "scope": full.scope, "in_use": full.in_use},
                )
                raise NoConnectionSlotError(host, full, wait)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _LONGEST_RETRY_SECONDS)

    def _take(self, slot: _Slot, limits: tuple[int, int]) -> Usage | None:
        """Take the slot in one step; return the usage of the set that was full instead."""
        raise NotImplementedError

    def _give_back(self, slot: _Slot) -> None:
        raise NotImplementedError

    def _live(self, key: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def _host_key(pool: Pool, host: str) -> str:
        return f"{pool.value}:{host.casefold()}"

    @staticmethod
    def _account_key(host: str, username: str) -> str:
        return f"account:{host}:{username}"


class RedisBudget(ConnectionBudget):
    """The budget every process shares, in Redis, with slots that expire unless renewed."""

    def __init__(self, client: redis.Redis, prefix: str, limits: _Limits, ttl: float) -> None:
        super().__init__(limits)
        self._client = client
        self._prefix = prefix
        self._ttl_ms = max(1, round(ttl * 1000))
        self._take_script = client.register_script(_TAKE)
        self._renew_script = client.register_script(_RENEW)
        self._live_script = client.register_script(_LIVE)
        self._held: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def _take(self, slot: _Slot, limits: tuple[int, int]) -> Usage | None:
        keys = [self._prefix + key for key in slot.keys]
        with _redis_outages():
            answer = cast(
                list[int], self._take_script(keys=keys, args=[slot.token, self._ttl_ms, *limits])
            )
        if answer[0] == 0:
            self._hold(slot)
            return None
        scope = "per-host" if answer[0] == 1 else "per-account"
        return Usage(scope, answer[1], answer[2])

    def _give_back(self, slot: _Slot) -> None:
        with self._lock:
            self._held.pop(slot.token, None)
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key in slot.keys:
                    pipe.zrem(self._prefix + key, slot.token)
                pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("budget.release_failed", extra={"error": type(exc).__name__})

    def _live(self, key: str) -> list[str]:
        with _redis_outages():
            tokens = cast(list[bytes], self._live_script(keys=[self._prefix + key]))
        return [token.decode() for token in tokens]

    def _hold(self, slot: _Slot) -> None:
        """Keep the slot renewed; start the renewer, which stops when nothing is held."""
        with self._lock:
            self._held[slot.token] = slot
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_while_held, name="connection-budget", daemon=True
                )
                self._renewer.start()

    def _renew_while_held(self) -> None:
        while True:
            time.sleep(self._ttl_ms / 3000)
            with self._lock:
                held = list(self._held.values())
                if not held:
                    self._renewer = None
                    return
            for slot in held:
                self._renew(slot)

    def _renew(self, slot: _Slot) -> None:
        keys = [self._prefix + key for key in slot.keys]
        try:
            lost = self._renew_script(keys=keys, args=[slot.token, self._ttl_ms])
        except REDIS_ERRORS as exc:  # it lapses if Redis stays away past its expiry
            log.warning("budget.renewal_failed", extra={"error": type(exc).__name__})
            return
        if lost:  # this process stalled past the expiry; the session is open, so count it
            log.warning("budget.slot_expired_while_held", extra={"token": slot.token})


class ProcessBudget(ConnectionBudget):
    """The same limits kept by this process alone: a lone `imap-bridge sync` without Redis."""

    def __init__(self, limits: _Limits) -> None:
        super().__init__(limits)
        self._sets: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _take(self, slot: _Slot, limits: tuple[int, int]) -> Usage | None:
        with self._lock:
            sets = [self._sets.setdefault(key, set()) for key in slot.keys]
            for scope, taken, limit in zip(("per-host", "per-account"), sets, limits, strict=True):
                if len(taken) >= limit:
                    return Usage(scope, len(taken), limit)
            for taken in sets:
                taken.add(slot.token)
            return None

    def _give_back(self, slot: _Slot) -> None:
        with self._lock:
            for key in slot.keys:
                self._sets.get(key, set()).discard(slot.token)

    def _live(self, key: str) -> list[str]:
        with self._lock:
            return sorted(self._sets.get(key, set()))


@contextlib.contextmanager
def _redis_outages() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise ConnectionBudgetUnavailableError(
            f"the connection budget's Redis does not answer ({type(exc).__name__})"
        ) from exc


_budgets: dict[tuple[object, ...], ConnectionBudget] = {}
_clients: dict[str, redis.Redis] = {}
_budgets_lock = threading.Lock()


def connection_budget(settings: Settings) -> ConnectionBudget:
    """Return this process's budget for `settings`: in Redis, or its own (module docstring)."""
    limits = _Limits(
        settings.imap_max_connections_per_host,
        settings.watch_max_connections_per_host,
        settings.imap_max_connections_per_account,
    )
    location = settings.redis_url
    if location is None:
        embedded = running_embedded_redis()
        location = f"unix://{embedded}" if embedded is not None else None
    key = (location, settings.queue_name, settings.imap_slot_seconds, limits)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            if location is None:
                budget = ProcessBudget(limits)
            else:
                budget = RedisBudget(
                    _client(location),
                    f"{settings.queue_name}:budget:",
                    limits,
                    settings.imap_slot_seconds,
                )
            _budgets[key] = budget
        return budget


def _client(location: str) -> redis.Redis:
    """One client (a connection pool) per Redis, shared by the budgets of every queue."""
    client = _clients.get(location)
    if client is None:
        if not _clients:
            # Registered after the embedded Redis's own exit hook, so it runs first: the
            # server stops at exit only when no other client is connected, and these are.
            atexit.register(_close_clients)
        client = redis.Redis.from_url(
            location,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
        )
        _clients[location] = client
    return client


def _close_clients() -> None:
    for client in _clients.values():
        client.close()
