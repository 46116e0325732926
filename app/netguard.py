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
(OAuth) uses `app.netguard_http.GuardedTransport`, whose network backend does
the same for each new connection the client opens, so every connection is
vetted on its own. That part lives apart because importing httpx costs more
than the whole IMAP layer, which needs only the sockets.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

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

    return first_answering(addresses, open_socket, (OSError,))


def first_answering(
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
