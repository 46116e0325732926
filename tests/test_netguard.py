"""The SSRF guard refuses every spelling of an address inside our own network, and
its httpx transport connects only to the address it vetted (no DNS rebinding)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import httpx
import pytest

from app import netguard, netguard_http
from tests.support.ssrf import (
    BLOCKED_FORMS,
    PUBLIC_ADDRESS,
    RecordingServer,
    connect_only_here,
    recording_server,
    resolve_name,
)

REBINDING_NAME = "rebinding.idp.test"


# IPv6 addresses that carry a non-public IPv4 address, and ranges that never are the internet.
EMBEDDED_AND_SPECIAL = [
    "::127.0.0.1",  # IPv4-compatible
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::ffff:0:127.0.0.1",  # SIIT
    "::ffff:0:a00:1",  # SIIT 10.0.0.1
    "::ffff:100.64.0.1",  # mapped carrier-grade NAT
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix
    "64:ff9b::c0a8:101",  # NAT64 192.168.1.1
    "64:ff9b:1::808:808",  # local-use NAT64, even with a public address inside
    "2002:7f00:1::1",  # 6to4 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 192.168.1.1
    "2002:6440:1::1",  # 6to4 100.64.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "0.1.2.3",
    "100.64.0.1",
    "192.0.0.9",  # inside 192.0.0.0/24, which Python 3.11 calls global
    "192.0.0.170",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
]


@pytest.mark.parametrize("host", [*BLOCKED_FORMS, *EMBEDDED_AND_SPECIAL])
def test_non_public_addresses_are_blocked(host: str) -> None:
    with pytest.raises(netguard.AddressBlocked):
        netguard.resolve(host, 993, allow_private=False)


def test_private_addresses_pass_when_allowed() -> None:
    [resolved] = netguard.resolve("127.0.0.1", 993, allow_private=True)
    assert resolved.address == ipaddress.ip_address("127.0.0.1")
    assert resolved.family == socket.AF_INET


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "::ffff:8.8.8.8",
        "2001:4860:4860::8888",
        "2002:808:808::1",
        "64:ff9b::808:808",
        "::ffff:0:808:808",  # SIIT: judged by the IPv4 address it carries
        "192.31.196.1",  # AS112, beside 192.0.0.0/24 but public
    ],
)
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


@pytest.fixture
def loopback_server() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


def guarded_client(*, allow_private: bool) -> httpx.Client:
    return httpx.Client(
        transport=netguard_http.GuardedTransport(allow_private=allow_private), trust_env=False
    )


def rebinding_url(server: RecordingServer) -> str:
    return server.url.replace("127.0.0.1", REBINDING_NAME)


def test_a_name_rebound_to_loopback_after_the_check_still_goes_to_the_vetted_address(
    loopback_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = connect_only_here(monkeypatch)
    answers = resolve_name(monkeypatch, REBINDING_NAME, PUBLIC_ADDRESS, "127.0.0.1")

    with guarded_client(allow_private=False) as client, pytest.raises(httpx.ConnectError):
        client.get(rebinding_url(loopback_server))

    port = int(loopback_server.url.rpartition(":")[2])
    assert answers == [PUBLIC_ADDRESS]  # resolved once, for the check and the connect
    assert elsewhere == [(PUBLIC_ADDRESS, port)]
    assert loopback_server.hits == []


def test_a_name_resolving_to_loopback_is_refused_before_any_connect(
    loopback_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = connect_only_here(monkeypatch)
    answers = resolve_name(monkeypatch, REBINDING_NAME, "127.0.0.1", PUBLIC_ADDRESS)

    with guarded_client(allow_private=False) as client, pytest.raises(netguard.AddressBlocked):
        client.get(rebinding_url(loopback_server))

    assert answers == ["127.0.0.1"]
    assert elsewhere == []
    assert loopback_server.hits == []


def test_every_new_connection_is_resolved_and_vetted_again(
    loopback_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = connect_only_here(monkeypatch)
    answers = resolve_name(monkeypatch, REBINDING_NAME, PUBLIC_ADDRESS, "127.0.0.1")

    with guarded_client(allow_private=False) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(rebinding_url(loopback_server))
        with pytest.raises(netguard.AddressBlocked):
            client.get(rebinding_url(loopback_server))

    assert answers == [PUBLIC_ADDRESS, "127.0.0.1"]
    assert len(elsewhere) == 1
    assert loopback_server.hits == []


def test_allowed_private_hosts_are_reached_at_the_first_answer(
    loopback_server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on 127.0.0.2: a second lookup's answer would fail the request.
    answers = resolve_name(monkeypatch, REBINDING_NAME, "127.0.0.1", "127.0.0.2")

    with guarded_client(allow_private=True) as client:
        response = client.get(rebinding_url(loopback_server) + "/path")

    assert response.text == "recorded"
    assert answers == ["127.0.0.1"]
    assert loopback_server.hits == ["GET /path"]
