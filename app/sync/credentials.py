"""Turn a stored mailbox into what the IMAP layer needs to log in, and log in."""

from __future__ import annotations

from dataclasses import replace

from pydantic import SecretStr
from sqlalchemy.engine import Engine

from app.config import Settings
from app.db.models import AuthType, Mailbox
from app.imap import ImapConnection, connect
from app.imap.config import ConnectOptions, ImapConfig
from app.security import SecretBox
from app.sync.connection_check import LoginOptions, refuse_plaintext


def connect_mailbox(
    engine: Engine,
    mailbox: Mailbox,
    settings: Settings,
    secrets: SecretBox,
    options: LoginOptions,
) -> ImapConnection:
    """Log in to the mailbox's server, refreshing an OAuth token that is about to expire.

    A mailbox stored with plain IMAP while IMAP_ALLOW_PLAINTEXT is off raises
    `PlaintextRefusedError` before any connection is made.
    """
    refuse_plaintext(mailbox.security.value, options)
    if mailbox.auth_type is AuthType.OAUTH:
        # Here, not at the top: the OAuth client (httpx, authlib) is a quarter of the
        # imports of a password mailbox's `imap-bridge sync`, which never uses it.
        from app.sync.token_refresh import refresh_if_expiring  # noqa: PLC0415

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
    """Build a sync's login rules: `connect_options` and the plain-IMAP rule."""
    return LoginOptions(connect_options(settings), settings.imap_allow_plaintext)


def interactive_login_options(settings: Settings) -> LoginOptions:
    """Build the login rules of a session an API request waits on."""
    return LoginOptions(interactive_connect_options(settings), settings.imap_allow_plaintext)


# What an interactive session may hold at once besides download chunks: a header block
# of remote search, a folder name.
_INTERACTIVE_LITERAL_BYTES = 1 << 20
# A message may grow a little between RFC822.SIZE and BODY[] (a server converting bare LFs).
_SIZE_SLACK_BYTES = 1 << 20


def connect_options(settings: Settings) -> ConnectOptions:
    """Build the sync's options: no overall deadline, literals up to the largest message."""
    return ConnectOptions(
        connect_timeout=settings.imap_connect_timeout,
        read_timeout=settings.imap_read_timeout,
        allow_private_hosts=settings.imap_allow_private_hosts,
        ca_file=settings.imap_ca_file,
        max_literal_bytes=settings.sync_max_message_bytes + _SIZE_SLACK_BYTES,
    )


def interactive_connect_options(settings: Settings) -> ConnectOptions:
    """Build the options of a session an API request waits on: a deadline, small literals."""
    return replace(
        connect_options(settings),
        operation_timeout=settings.imap_operation_timeout,
        max_literal_bytes=max(settings.imap_download_chunk_bytes, _INTERACTIVE_LITERAL_BYTES),
    )
