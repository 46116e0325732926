"""Fixtures of the fault tests: proxies in front of the session's Dovecot, short timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.config import Settings
from tests.dovecot import Dovecot
from tests.reliability.fault_proxy import FaultProxy

READ_TIMEOUT = 1.5


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
