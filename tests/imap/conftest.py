"""Fixtures of the IMAP layer tests: a logged-in session of a fresh Dovecot user."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.imap import ImapConnection, connect
from app.imap.config import ConnectOptions
from tests.support.dovecot import MailUser
from tests.support.imap_config import config_for


@pytest.fixture
def connection(mail_user: MailUser, connect_options: ConnectOptions) -> Iterator[ImapConnection]:
    with connect(config_for(mail_user), connect_options) as session:
        yield session
