"""Try IMAP settings and credentials without saving anything.

    connect (SSRF guard, TLS, login) -> capabilities -> LIST -> log out

Every failure leaves as the `ImapError` that says why (`auth_failed`,
`tls_error`, `unreachable`, `timeout`, `blocked_host`...), which is what a
CRM's "test connection" button shows its user. Registering or changing a
mailbox goes through the same login first (`app.sync.mailboxes`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import SecretStr

from app.imap import ConnectOptions, FolderManager, FolderNode, ImapConfig, connect
from app.imap.config import Security


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Where and how to reach an account, without its credential."""

    host: str
    port: int
    security: Security
    username: str
    tls_verify: bool


@dataclass(frozen=True, slots=True)
class Credential:
    """A password (LOGIN), or an OAuth access token (XOAUTH2) with what renews it."""

    password: SecretStr | None = None
    access_token: SecretStr | None = None
    provider: str | None = None
    refresh_token: SecretStr | None = None
    expires_in: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """What a successful login showed: the server's capabilities and its folder tree."""

    capabilities: list[str]
    folders: list[FolderNode]


def login_config(server: ServerSettings, credential: Credential) -> ImapConfig:
    """Combine server settings and a credential into what the connector takes."""
    return ImapConfig(
        **asdict(server), password=credential.password, access_token=credential.access_token
    )


def check_connection(
    server: ServerSettings, credential: Credential, options: ConnectOptions
) -> ConnectionReport:
    """Log in, list the folders, log out; raise the `ImapError` that stopped it."""
    with connect(login_config(server, credential), options) as connection:
        return ConnectionReport(
            capabilities=sorted(connection.capabilities),
            folders=FolderManager(connection).tree(),
        )
