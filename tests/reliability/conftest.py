"""Fixtures of the fault tests: proxies in front of the session's Dovecot, short timeouts, and
in front of the machine's PostgreSQL, so one test can take it down for itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import make_url

from app.config import Settings
from tests.support.databases import POSTGRES_ADMIN_URL
from tests.support.dovecot import Dovecot
from tests.support.fault_proxy import READ_TIMEOUT, FaultProxy


@pytest.fixture
def tls_proxy(dovecot: Dovecot) -> Iterator[FaultProxy]:
    """A fault proxy in front of Dovecot's TLS port: faults by byte count."""
    with FaultProxy(dovecot.host, dovecot.tls_port) as proxy:
        yield proxy


@pytest.fixture
def plain_proxy(dovecot: Dovecot) -> Iterator[FaultProxy]:
    """A fault proxy in front of Dovecot's plain port, where it can read the commands."""
    with FaultProxy(dovecot.host, dovecot.plain_port) as proxy:
        yield proxy


@pytest.fixture
def fault_settings(settings: Settings) -> Settings:
    """The test settings with a read timeout short enough to outlast in a test."""
    return settings.model_copy(update={"imap_read_timeout": READ_TIMEOUT, "sync_batch_size": 50})


def _proxy_to(url: str) -> Iterator[FaultProxy]:
    address = make_url(url)
    assert address.host is not None
    assert address.port is not None
    with FaultProxy(address.host, address.port) as proxy:
        yield proxy


@pytest.fixture
def postgres_proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of the machine's PostgreSQL: `take_down()` is a database outage."""
    yield from _proxy_to(POSTGRES_ADMIN_URL)
