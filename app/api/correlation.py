"""Give every request a correlation id: the caller's `X-Request-ID` if sane, else a new one.

    request ---- X-Request-ID: a sane id (app.correlation) -> kept, else a new one
      bound while the app answers: its log lines, uvicorn's access line, the sync
      runs and events it records and the jobs it queues carry it
    response --- X-Request-ID: the id, on every answer (a 500 included)

It wraps the whole application, outside Starlette's error middleware, so the
traceback of an unexpected error and its 500 carry the id too.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.correlation import accepted_correlation_id, correlation_scope

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")


class RequestCorrelation:
    """ASGI middleware binding the request's correlation id (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next(
            (value.decode("latin-1") for key, value in scope["headers"] if key == _HEADER_KEY),
            None,
        )
        with correlation_scope(accepted_correlation_id(offered)) as correlation_id:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MutableHeaders(scope=message)[HEADER] = correlation_id
                await send(message)

            await self.app(scope, receive, send_with_id)
