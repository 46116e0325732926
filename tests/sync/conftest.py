"""Fixtures for sync tests: settings pointing at the test Dovecot, mailboxes of its users."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, MailboxSecurity
from app.security import SecretBox
from tests.dovecot import Dovecot, MailUser

MailboxFactory = Callable[..., int]


@pytest.fixture
def settings(database_url: str, dovecot: Dovecot) -> Settings:
    return Settings(
        database_url=database_url,
        secret_keys=[SecretStr(Fernet.generate_key().decode())],
        imap_allow_private_hosts=True,
        imap_ca_file=dovecot.ca_file,
        imap_connect_timeout=5,
        imap_read_timeout=10,
        sync_batch_size=50,
    )


@pytest.fixture
def add_mailbox(engine: Engine, settings: Settings) -> MailboxFactory:
    """Register a Dovecot user as a mailbox (as the API would) and return its id."""
    secrets = SecretBox.from_settings(settings)

    def add(user: MailUser, **overrides: object) -> int:
        values: dict[str, object] = {
            "owner_user_id": "crm-user-1",
            "owner_email": "owner@example.com",
            "email_address": f"{user.name}@example.com",
            "host": user.dovecot.host,
            "port": user.dovecot.tls_port,
            "security": MailboxSecurity.SSL,
            "username": user.name,
            "password_enc": secrets.encrypt(user.password),
        }
        values.update(overrides)
        with session_scope(engine) as session:
            mailbox = Mailbox.model_validate(values)
            session.add(mailbox)
            session.flush()
            assert mailbox.id is not None
            return mailbox.id

    return add
