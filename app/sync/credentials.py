"""Turn a stored mailbox into what the IMAP layer needs to log in, and log in."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db.models import AuthType, Mailbox
from app.imap import ImapConnection, connect
from app.imap.config import ConnectOptions, ImapConfig
from app.security import SecretBox
from app.sync.connection_check import LoginOptions, refuse_plaintext
from app.sync.token_refresh import refresh_if_expiring


def connect_mailbox(
    engine: Engine, mailbox: Mailbox, settings: Settings, secrets: SecretBox
) -> ImapConnection:
    """Log in to the mailbox's server, refreshing an OAuth token that is about to expire.

    A mailbox stored with plain IMAP while IMAP_ALLOW_PLAINTEXT is off raises
    `PlaintextRefusedError` before any connection is made.
    """
    options = login_options(settings)
    refuse_plaintext(mailbox.security.value, options)
    mailbox = refresh_if_expiring(
        engine, mailbox, secrets, allow_private_hosts=settings.oauth_allow_private_hosts
    )
    return connect(imap_config(mailbox, secrets), options.connect)


def imap_config(mailbox: Mailbox, secrets: SecretBox) -> ImapConfig:
    """Decrypt the mailbox's credential into an `ImapConfig` (secrets stay `SecretStr`)."""
    password = access_token = None
    if mailbox.auth_type is AuthType.OAUTH and mailbox.access_token_enc:
        access_token = SecretStr(secrets.decrypt(mailbox.access_token_enc))
    elif mailbox.password_enc:
        password = SecretStr(secrets.decrypt(mailbox.password_enc))
    return ImapConfig(
        host=mailbox.host,
        port=mailbox.port,
        security=mailbox.security.value,
        username=mailbox.username,
        password=password,
        access_token=access_token,
        tls_verify=mailbox.tls_verify,
    )


def login_options(settings: Settings) -> LoginOptions:
    """Build the service-wide login rules from the settings."""
    return LoginOptions(connect_options(settings), settings.imap_allow_plaintext)


def connect_options(settings: Settings) -> ConnectOptions:
    """Build the connector's service-wide options from the settings."""
    return ConnectOptions(
        connect_timeout=settings.imap_connect_timeout,
        read_timeout=settings.imap_read_timeout,
        allow_private_hosts=settings.imap_allow_private_hosts,
        ca_file=settings.imap_ca_file,
    )
