"""What the SSRF tests share: the address spellings the guard must refuse, a resolver
that changes its answer between lookups (DNS rebinding), a connect guard, and a
loopback server that records every request it gets.

Nothing here touches the project: the resolver replaced is `socket.getaddrinfo`,
and the guard wraps `socket.socket.connect` so that a test can only ever reach
this machine. An address elsewhere is recorded and refused before any packet
leaves, so even code that fails to refuse it sends nothing out.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support.live_api import serving

# Spellings that reach this machine when connected to; a server on 127.0.0.1 answers
# all of them ("localhost" may resolve to ::1 first, then 127.0.0.1).
REACHING_LOOPBACK = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0.0.0.0",
    "::ffff:127.0.0.1",
    "localhost",
]
# Spellings of other networks' addresses; connecting to them is never allowed in a test.
ELSEWHERE = [
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.1.1",
    "169.254.169.254",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
]
# Every spelling of an address inside our own network (the list).
BLOCKED_FORMS = [*REACHING_LOOPBACK, "::1", *ELSEWHERE]
# A public address a rebinding name answers first; connect_only_here() keeps it unreached.
PUBLIC_ADDRESS = "8.8.8.8"


def url_host(host: str) -> str:
    """Write `host` as it goes into a URL's authority (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def _stays_here(host: str) -> bool:
    address = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def connect_only_here(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Refuse (and record) every TCP connect to another machine; loopback goes through."""
    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not _stays_here(address[0]):
            attempts.append((address[0], address[1]))
            raise ConnectionRefusedError(errno.ECONNREFUSED, "not this machine: refused by test")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def resolve_name(monkeypatch: pytest.MonkeyPatch, name: str, *answers: str) -> list[str]:
    """Make lookup N of `name` answer `answers[N]` (the last repeats); return those given."""
    real_getaddrinfo = socket.getaddrinfo
    given: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real_getaddrinfo(host, port, *args, **kwargs)
        answer = answers[min(len(given), len(answers) - 1)]
        given.append(answer)
        return real_getaddrinfo(answer, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return given


@dataclass
class RecordingServer:
    """A loopback HTTP server that keeps `METHOD /path` of each request it gets."""

    url: str = ""
    hits: list[str] = field(default_factory=list)


@contextmanager
def recording_server(redirect_to: str | None = None) -> Iterator[RecordingServer]:
    """Serve a `RecordingServer` on 127.0.0.1: it answers 200, or 307 to `redirect_to`."""
    server = RecordingServer()

    async def record(request: Request) -> Response:
        server.hits.append(f"{request.method} {request.url.path}")
        if redirect_to is not None:
            return Response(status_code=307, headers={"location": redirect_to})
        return PlainTextResponse("recorded")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", record, methods=methods)])
    with serving(app) as base_url:
        server.url = base_url
        yield server
