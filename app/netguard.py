"""Refuse outbound connections to addresses inside our own network (SSRF guard).

A host name is resolved once; every address it resolves to must be public,
and the caller then connects to exactly those addresses, so a DNS answer that
changes between the check and the connect (rebinding) cannot slip through.
Numeric spellings such as `127.1`, `2130706433` and `0x7f000001` resolve to
loopback like any name does and are refused the same way. An IPv6 address
that carries an IPv4 one (compatible, mapped, SIIT, NAT64, 6to4) is judged by
that IPv4 address alone. Ranges that never lead to the public internet
(local-use NAT64, site-local, Teredo, multicast ...) are listed here rather
than left to `ipaddress`, whose tables differ between Python versions.

    resolve(host) -> every address public (or private allowed)? -> connect to those
                  -> one is not: AddressBlocked, nothing connects

Plain sockets (IMAP, SMTP) use `resolve` + `connect_resolved`; an httpx client
(OAuth) uses `GuardedTransport`, whose network backend does the same for each
new connection the client opens, so every connection is vetted on its own.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 prefixes whose last 32 bits are the IPv4 address a packet is meant for.
_IPV4_IN_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(prefix)
    for prefix in (
        "::/96",  # IPv4-compatible, deprecated (RFC 4291 §2.5.5.1); holds :: and ::1 too
        "::ffff:0:0/96",  # IPv4-mapped (RFC 4291 §2.5.5.2)
        "::ffff:0:0:0/96",  # IPv4-translated, SIIT (RFC 2765)
        "64:ff9b::/96",  # NAT64 well-known prefix (RFC 6052)
    )
)
# Never the public internet, whatever this Python's `ipaddress` tables say.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",  # "this network" (RFC 791)
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "192.0.0.0/24",  # IETF protocol assignments (RFC 6890), anycast services inside
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the limited broadcast 255.255.255.255
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): a translator inside our network
        "2001::/32",  # Teredo (RFC 4380): the tunnel's end is obfuscated, never judged
        "fec0::/10",  # site-local, deprecated (RFC 3879)
        "ff00::/8",  # multicast
    )
)
Connection = TypeVar("Connection")


class AddressBlocked(ValueError):
    """The host resolves to a loopback, private, link-local or otherwise non-public address."""


class ResolutionFailed(OSError):
    """The host name does not resolve."""


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """One vetted address to connect to, with the socket family it needs."""

    family: socket.AddressFamily
    address: IPAddress
    port: int


def is_public(address: IPAddress) -> bool:
    """Say whether `address` is routable on the public internet (not ours to reach into)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return is_public(embedded)
    if any(address in network for network in _NOT_PUBLIC):
        return False
    return address.is_global


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 address carries and leads to, if it carries one."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if any(address in prefix for prefix in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour  # 6to4 (RFC 3056): 2002:AABB:CCDD::/48 leads to A.B.C.D


def resolve(host: str, port: int, *, allow_private: bool) -> list[ResolvedAddress]:
    """Resolve `host` and return the addresses to connect to, refusing non-public ones."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResolutionFailed(f"cannot resolve {host!r}") from exc
    resolved: list[ResolvedAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not allow_private and not is_public(address):
            raise AddressBlocked(f"{host!r} resolves to a non-public address")
        entry = ResolvedAddress(socket.AddressFamily(family), address, port)
        if entry not in resolved:
            resolved.append(entry)
    if not resolved:
        raise ResolutionFailed(f"cannot resolve {host!r}")
    return resolved


def connect_resolved(addresses: list[ResolvedAddress], timeout: float) -> socket.socket:
    """Open a TCP connection to the first of `addresses` that answers."""

    def open_socket(entry: ResolvedAddress) -> socket.socket:
        sock = socket.socket(entry.family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((str(entry.address), entry.port))
        except OSError:
            sock.close()
            raise
        return sock

    return _first_answering(addresses, open_socket, (OSError,))


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
        return _first_answering(
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


def _first_answering(
    addresses: list[ResolvedAddress],
    connect: Callable[[ResolvedAddress], Connection],
    failures: tuple[type[Exception], ...],
) -> Connection:
    """Return `connect` of the first address that does not fail; else raise the last failure."""
    last_error: Exception | None = None
    for entry in addresses:
        try:
            return connect(entry)
        except failures as exc:
            last_error = exc
    assert last_error is not None  # resolve() never returns an empty list
    raise last_error
