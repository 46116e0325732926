"""Refuse outbound connections to addresses inside our own network (SSRF guard).

A host name is resolved once; every address it resolves to must be public,
and the caller then connects to exactly those addresses, so a DNS answer that
changes between the check and the connect (rebinding) cannot slip through.
Numeric spellings such as `127.1`, `2130706433` and `0x7f000001` resolve to
loopback like any name does and are refused the same way.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


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
    last_error: OSError | None = None
    for entry in addresses:
        sock = socket.socket(entry.family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((str(entry.address), entry.port))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    assert last_error is not None  # resolve() never returns an empty list
    raise last_error
