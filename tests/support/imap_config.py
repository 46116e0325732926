"""IMAP settings of a Dovecot test user, as the service would be given them."""

from __future__ import annotations

from app.imap.config import ImapConfig
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
