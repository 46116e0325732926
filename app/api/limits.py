"""Request limits: a cap on body size for every route, a rate limit on the expensive ones.

    body over API_MAX_BODY_BYTES (Content-Length, or bytes counted as they stream) -> 413
    more than API_RATE_LIMIT_PER_MINUTE calls of one API key to one route that costs
    a remote round trip (below) .................................................. -> 429
    more than SSE_MAX_STREAMS_PER_KEY open event streams of one API key ............ -> 429

A route is limited when a call makes the service talk to a server a client can
name or cannot bound: it opens an IMAP session (connection checks, mailbox
create and patch, folder settings, remote search, /raw, attachments), asks an
OAuth provider (token exchange, enabling a provider), resolves a caller's host
name (webhook create and patch), or makes a worker do so (sync trigger, webhook
test). Routes that only read or write the database are not limited.

The limit is a token bucket per API key and route, held in this process's memory:
a burst of attachment downloads does not lock the key out of sync triggers, and
each API process counts on its own, so N processes behind a load balancer allow
up to N times the rate. That bounds a runaway client, which is its purpose; it is
not a quota.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.auth import ApiKeyDep
from app.api.problems import ApiError, problem_response
from app.config import Settings
from app.db.models import persisted_id


class _BodyTooLarge(Exception):
    """The client kept sending past the limit; the app must not get the rest."""


class BodySizeLimit:
    """ASGI middleware answering 413 `payload_too_large` to bodies over `max_bytes`.

    A declared Content-Length over the limit is refused before the app runs. A
    body without one (chunked) or longer than declared is counted as it streams:
    the read that crosses the limit fails, and whatever the app then answers is
    replaced by the 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        exceeded = False
        responded = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if exceeded:
                return  # the app's answer to the failed read; the 413 goes out instead
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):  # the app may also turn it into an answer
            await self.app(scope, counted_receive, guarded_send)
        if exceeded and not responded:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "payload_too_large",
            "The request body is too large",
            f"send at most {self.max_bytes} bytes",
            headers={"Connection": "close"},  # the rest of the body is never read
        )
        await response(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0  # the server rejects a malformed length itself
    return 0


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key (an API key's id and a route): `per_minute` calls in a burst,
    refilled evenly.

    Per API process (see the module docstring); safe to call from any thread.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """Spend one call of `key`; return 0 when allowed, else the seconds until one is."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.setdefault(key, _Bucket(self.capacity, now))
            elapsed = max(now - bucket.updated, 0.0)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.refill_per_second)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.refill_per_second


async def rate_limit(request: Request, api_key: ApiKeyDep) -> None:
    """Let the call through, or answer 429 `rate_limited` with Retry-After in seconds."""
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take((persisted_id(api_key), _route_of(request)))
    if wait:
        retry_after = max(1, math.ceil(wait))
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests",
            f"this API key may make {int(limiter.capacity)} calls a minute to this route;"
            f" retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def _route_of(request: Request) -> str:
    """The matched operation's id (FastAPI records the route in the scope)."""
    route = request.scope.get("route")
    return str(getattr(route, "unique_id", request.url.path))


# In a route's `dependencies=[...]`, with RATE_LIMITED in its `responses=`.
RATE_LIMIT = Depends(rate_limit)


STREAM_RETRY_AFTER_SECONDS = 5


class StreamSlots:
    """Open event streams by API key id in this process, at most `per_key` each.

    Only the event loop touches it (the dependency below), so it needs no lock.
    """

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: Counter[int] = Counter()

    @contextlib.contextmanager
    def hold(self, key: int) -> Iterator[None]:
        """Count a stream of `key` while it is open; 429 `too_many_streams` past the cap."""
        if self._open[key] >= self.per_key:
            raise ApiError(
                429,
                "too_many_streams",
                "Too many open event streams",
                f"this API key may hold {self.per_key} open event streams at once; close one",
                headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)},
            )
        self._open[key] += 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]


async def hold_stream_slot(request: Request, api_key: ApiKeyDep) -> AsyncIterator[None]:
    """Hold one of the key's stream slots until the response ends (however it ends)."""
    slots: StreamSlots = request.app.state.stream_slots
    with slots.hold(persisted_id(api_key)):
        yield


# In a streaming route's `dependencies=[...]`, with TOO_MANY_STREAMS in its `responses=`.
STREAM_SLOT = Depends(hold_stream_slot)


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Cap request bodies and give the app its rate limiter and stream slots."""
    app.state.rate_limiter = RateLimiter(settings.api_rate_limit_per_minute)
    app.state.stream_slots = StreamSlots(settings.sse_max_streams_per_key)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
