"""The SSRF guard refuses every spelling of an address inside our own network."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from app import netguard


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0.0.0.0",
        "::1",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "fc00::1",
        "fe80::1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses_are_blocked(host: str) -> None:
    with pytest.raises(netguard.AddressBlocked):
        netguard.resolve(host, 993, allow_private=False)


def test_private_addresses_pass_when_allowed() -> None:
    [resolved] = netguard.resolve("127.0.0.1", 993, allow_private=True)
    assert resolved.address == ipaddress.ip_address("127.0.0.1")
    assert resolved.family == socket.AF_INET


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"])
def test_public_addresses_are_public(address: str) -> None:
    assert netguard.is_public(ipaddress.ip_address(address))


def test_unknown_names_fail_to_resolve() -> None:
    with pytest.raises(netguard.ResolutionFailed):
        netguard.resolve("no-such-host.invalid", 993, allow_private=True)


def test_connect_tries_the_next_address_when_one_refuses() -> None:
    with socket.socket() as closed, socket.socket() as listening:
        closed.bind(("127.0.0.1", 0))
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        addresses = [
            netguard.ResolvedAddress(socket.AF_INET, ipaddress.ip_address("127.0.0.1"), port)
            for port in (closed.getsockname()[1], listening.getsockname()[1])
        ]
        closed.close()
        with netguard.connect_resolved(addresses, timeout=2) as sock:
            assert sock.getpeername()[1] == listening.getsockname()[1]
