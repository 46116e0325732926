"""The correlation id: one id from an API request to every log line and row it caused.

    API request ......... X-Request-ID taken if it is sane, else a new id;
                          echoed in the response (app.api.correlation)
      enqueue_sync ...... the id rides in the job's kwargs (app.queue)
    arq job ............. binds the id it was queued with, else a new one
      sync_mailbox ...... its threads (the batch writer, the lease heartbeat) copy the
                          context, so every line of the run carries the id
      sync_run, event ... rows made while an id is bound keep it (`correlation_id`)
    every log record .... `correlation_id` stamped from the context (app.logs)

A `ContextVar` rather than an argument passed down: the engine, the repositories
and the log formatter all see it without any signature changing, asyncio tasks
and `asyncio.to_thread` copy it by themselves, and a plain thread gets it from
`contextvars.copy_context().run`. Outside any bound scope (the cron's own pass,
a command) it is None and nothing is stamped.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

MAX_LENGTH = 64  # the `correlation_id` columns
# What an incoming id may look like: a UUID, a trace id, a load balancer's request id.
_SANE_ID = re.compile(rf"[A-Za-z0-9._:@/+=-]{{1,{MAX_LENGTH}}}")

_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def current_correlation_id() -> str | None:
    """Return the id bound to this context, if any."""
    return _current.get()


def new_correlation_id() -> str:
    """Return a fresh id (32 hex digits)."""
    return uuid.uuid4().hex


def accepted_correlation_id(offered: str | None) -> str:
    """Return `offered` when it is a sane id (1 to 64 of `A-Za-z0-9._:@/+=-`), else a new one.

    A caller's id is kept so that its own logs and ours share it; anything else
    (empty, too long, spaces, control characters that would forge log lines) is
    replaced rather than refused: the request itself is fine.
    """
    if offered is not None and _SANE_ID.fullmatch(offered):
        return offered
    return new_correlation_id()


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Bind `correlation_id` (a new one when None) for the block; yield it."""
    bound = correlation_id or new_correlation_id()
    token = _current.set(bound)
    try:
        yield bound
    finally:
        _current.reset(token)


def correlated(
    job: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """Run an arq job with the `correlation_id` keyword it was queued with bound (else a new id).

    The job's own signature stays as it is; the keyword is taken off here.
    """

    @functools.wraps(job)
    async def run(
        ctx: dict[Any, Any], *args: Any, correlation_id: str | None = None, **kwargs: Any
    ) -> T:
        with correlation_scope(correlation_id):
            return await job(ctx, *args, **kwargs)

    return run
