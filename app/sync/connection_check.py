"""Try IMAP settings and credentials without saving anything.

    plain IMAP without IMAP_ALLOW_PLAINTEXT -> PlaintextRefusedError (nothing sent)
    a slot of the connection budget (app.connection_budget), else NoConnectionSlotError
    connect (SSRF guard, TLS, login) -> capabilities -> LIST -> log out -> slot given back
                                        (with a preview: LIST-STATUS, else STATUS per
                                        folder, and the first-sync window, app.sync.preview)

Every failure leaves as the `ImapError` that says why (`auth_failed`,
`tls_error`, `unreachable`, `timeout`, `blocked_host`...), which is what a
CRM's "test connection" button shows its user. Registering or changing a
mailbox goes through the same login first (`app.sync.mailboxes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date

from pydantic import SecretStr

from app.connection_budget import ConnectionBudget, Pool
from app.imap import (
    ConnectOptions,
    FolderManager,
    FolderNode,
    ImapConfig,
    ImapConnection,
    Security,
    connect,
)
from app.imap.folder_manager import folder_tree
from app.sync.errors import PlaintextRefusedError
from app.sync.preview import SyncPreview, preview_sync


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
    """What a successful login showed: the server's capabilities, its folder tree, the cost."""

    capabilities: list[str]
    folders: list[FolderNode]
    preview: SyncPreview | None = None


@dataclass(frozen=True, slots=True)
class LoginOptions:
    """How the service logs in anywhere: the connector's options, the plain-IMAP rule, and
    the connection budget every session takes a slot of (waiting up to `slot_wait` seconds).
    """

    connect: ConnectOptions
    allow_plaintext: bool
    budget: ConnectionBudget
    slot_wait: float = 0.0


def refuse_plaintext(security: Security, options: LoginOptions) -> None:
    """Raise `PlaintextRefusedError` for plain IMAP unless the operator allowed it."""
    if security is Security.NONE and not options.allow_plaintext:
        raise PlaintextRefusedError(
            "plain IMAP would send the credentials in clear; use ssl or starttls"
            " (the operator can allow it with IMAP_ALLOW_PLAINTEXT)"
        )


@contextmanager
def log_in(
    server: ServerSettings, credential: Credential, options: LoginOptions
) -> Iterator[ImapConnection]:
    """Connect and log in with `credential`; refuse plain IMAP before anything is sent."""
    refuse_plaintext(server.security, options)
    with budgeted_session(login_config(server, credential), options) as connection:
        yield connection


@contextmanager
def budgeted_session(config: ImapConfig, options: LoginOptions) -> Iterator[ImapConnection]:
    """Hold a slot of the connection budget for as long as the session is open.

    Raises `NoConnectionSlotError` when none frees within `options.slot_wait`,
    `ConnectionBudgetUnavailableError` when Redis, which keeps the budget, does not answer.
    """
    with (
        options.budget.slot(Pool.IMAP, config.host, config.username, wait=options.slot_wait),
        connect(config, options.connect) as connection,
    ):
        yield connection


def login_config(server: ServerSettings, credential: Credential) -> ImapConfig:
    """Combine server settings and a credential into what the connector takes."""
    return ImapConfig(
        **asdict(server), password=credential.password, access_token=credential.access_token
    )


def check_connection(
    server: ServerSettings,
    credential: Credential,
    options: LoginOptions,
    *,
    preview_since: date | None = None,
) -> ConnectionReport:
    """Log in, list the folders (and preview a sync since `preview_since`), log out.

    Raises the error that stopped it.
    """
    with log_in(server, credential, options) as connection:
        capabilities = sorted(connection.capabilities)
        manager = FolderManager(connection)
        if preview_since is None:
            return ConnectionReport(capabilities, manager.tree())
        folders, counts = manager.counted_listing()
        return ConnectionReport(
            capabilities,
            folder_tree(folders),
            preview_sync(connection, folders, counts, preview_since),
        )
