"""Fixtures of the IMAP layer tests: a logged-in session of a fresh Dovecot user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.imap import ImapConnection, connect
from app.imap.config import ConnectOptions, ImapConfig
from tests.support.dovecot import MailUser


def config_for(user: MailUser, **overrides: object) -> ImapConfig:
    """The user's settings for implicit TLS, with any field overridden."""
    values: dict[str, object] = {
        "host": user.dovecot.host,
        "port": user.dovecot.tls_port,
        "security": "ssl",
        "username": user.name,
        "password": user.password,
    }
    values.update(overrides)
    return ImapConfig.model_validate(values)


@pytest.fixture
def connection(mail_user: MailUser, connect_options: ConnectOptions) -> Iterator[ImapConnection]:
    with connect(config_for(mail_user), connect_options) as session:
        yield session
