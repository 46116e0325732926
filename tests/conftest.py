"""Session-wide fixtures: a private Dovecot, a fresh mailbox per test, connect options."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.imap.config import ConnectOptions
from tests.dovecot import Dovecot, DovecotInstances, MailUser


@pytest.fixture(scope="session")
def dovecot_instances() -> Iterator[DovecotInstances]:
    """Start Dovecots on demand (`.get(condstore=False)`), each once; stop all at the end.

    A start failure raises DovecotError carrying the master output and the Dovecot log.
    """
    instances = DovecotInstances()
    yield instances
    instances.stop_all()


@pytest.fixture(scope="session")
def dovecot(dovecot_instances: DovecotInstances) -> Dovecot:
    """Return the session's Dovecot with CONDSTORE/QRESYNC, STARTTLS and SPECIAL-USE."""
    return dovecot_instances.get()


@pytest.fixture
def mail_user(dovecot: Dovecot) -> MailUser:
    """Return a new user with an empty mailbox, so no two tests share mailbox state."""
    return dovecot.add_user()


@pytest.fixture(scope="session")
def connect_options(dovecot: Dovecot) -> ConnectOptions:
    """Return options that trust the test CA and allow the loopback server."""
    return ConnectOptions(
        connect_timeout=5, read_timeout=10, allow_private_hosts=True, ca_file=dovecot.ca_file
    )
