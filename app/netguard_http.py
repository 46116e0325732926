"""The SSRF guard of `app.netguard` for httpx clients (OAuth): every new connection vetted.

Apart from `app.netguard` so that the IMAP layer, which connects plain
sockets, does not pay for importing httpx.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from functools import cache
from typing import Any

import httpcore
import httpx

from app.netguard import ResolutionFailed, first_answering, resolve


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """httpcore's blocking network backend, connecting only to addresses `resolve` vetted."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Resolve `host` once, refuse it if blocked, then connect to a vetted IP literal."""
        try:
            addresses = resolve(host, port, allow_private=self._allow_private)
        except ResolutionFailed as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return first_answering(
            addresses,
            lambda entry: self._sockets.connect_tcp(
                str(entry.address), entry.port, timeout, local_address, socket_options
            ),
            (httpcore.ConnectError, httpcore.ConnectTimeout),
        )


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with every connection made by `GuardedNetworkBackend`.

    A blocked host raises `AddressBlocked` out of the request. There is no
    proxy option: a proxy would resolve and connect on our behalf, past the
    guard (so give the client `trust_env=False` too). TLS still checks the
    certificate against the URL's host name, which is also the SNI sent.
    """

    def __init__(self, *, allow_private: bool) -> None:
        ssl_context = _trust_store_context()
        super().__init__(verify=ssl_context)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            network_backend=GuardedNetworkBackend(allow_private=allow_private),
        )


@cache
def _trust_store_context() -> ssl.SSLContext:
    """Build httpx's verifying TLS context once: loading the CA store costs ~25 ms a client."""
    return httpx.create_ssl_context()
