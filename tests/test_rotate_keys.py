"""`imap-bridge rotate-keys` re-encrypts every stored secret under the newest key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine
from sqlmodel import select

from app.db import session_scope
from app.db.models import Mailbox, OAuthProviderSettings
from app.security import SecretBox, SecretDecryptionError
from tests.support.factories import create_mailbox
from tests.support.secret_watch import SecretKind, register_secret

REPO_ROOT = Path(__file__).resolve().parents[1]


def rotate_keys(database_url: str, keys: list[str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEYS": ",".join(keys)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rotate-keys"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored_secrets(engine: Engine) -> tuple[str, str]:
    with session_scope(engine) as session:
        mailbox = session.exec(select(Mailbox)).one()
        provider = session.get(OAuthProviderSettings, "gmail")
        assert mailbox.password_enc is not None
        assert provider is not None
        assert provider.client_secret_enc is not None
        return mailbox.password_enc, provider.client_secret_enc


@pytest.fixture
def old_key(engine: Engine) -> str:
    """A database whose secrets are encrypted under one old key."""
    key = register_secret(SecretKind.FERNET_KEY, Fernet.generate_key().decode(), "old")
    old = SecretBox([key])
    password = register_secret(SecretKind.IMAP_PASSWORD, "mailbox password", "stored")
    with session_scope(engine) as session:
        create_mailbox(session, password_enc=old.encrypt(password))
        session.add(OAuthProviderSettings(name="gmail", client_secret_enc=old.encrypt("client")))
    return key


def test_every_secret_moves_to_the_newest_key(
    engine: Engine, database_url: str, old_key: str
) -> None:
    new_key = register_secret(SecretKind.FERNET_KEY, Fernet.generate_key().decode(), "new")

    result = rotate_keys(database_url, [new_key, old_key])

    assert result.returncode == 0, result.stderr
    assert "mailbox.password_enc: 1 re-encrypted" in result.stdout
    password, client_secret = stored_secrets(engine)
    newest_only = SecretBox([new_key])
    assert newest_only.decrypt(password) == "mailbox password"
    assert newest_only.decrypt(client_secret) == "client"
    with pytest.raises(SecretDecryptionError):
        SecretBox([old_key]).decrypt(password)
    assert "mailbox password" not in result.stdout + result.stderr


def test_keys_that_open_nothing_change_nothing(
    engine: Engine, database_url: str, old_key: str
) -> None:
    before = stored_secrets(engine)

    result = rotate_keys(database_url, [Fernet.generate_key().decode()])

    assert result.returncode == 1
    assert "nothing was changed" in result.stderr
    assert stored_secrets(engine) == before
