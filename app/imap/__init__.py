"""The IMAP protocol layer on imapclient, usable on its own as a library.

    with connect(ImapConfig(host=..., username=..., password=...)) as conn:
        mail = EmailManager(conn)
        mail.select_folder("INBOX")
        emails = mail.find(mail.query().sender("a@example.com").build())
        folders = FolderManager(conn).folders()

It knows nothing of the database or HTTP. Watching for changes takes an asyncio
session instead, thousands to a process: `app.imap.aio_client.connect_async`
(IDLE, NOTIFY), on the same TLS set-up, SSRF guard and typed errors.

What this module exports is what the rest of the service may use (the API
imports nothing else of this package): the session, the managers, the parsed
message, the search builder, and the typed failures.
"""

from app.imap.config import ConnectOptions, ImapConfig, ImapPassword, Security
from app.imap.connection import ImapConnection, connect
from app.imap.email_manager import EmailManager, SelectedFolder
from app.imap.errors import (
    AuthenticationFailed,
    BlockedHost,
    ConnectionLost,
    FolderNotFound,
    FolderReadOnly,
    ImapError,
    NetworkError,
    ProtocolError,
    ResponseTooLarge,
    ServerUnavailable,
    TimedOut,
    TlsFailed,
    Unreachable,
)
from app.imap.folder_manager import (
    FolderManager,
    FolderNode,
    FolderStatus,
    FolderType,
    RemoteFolder,
)
from app.imap.message import Address, ParsedMessage
from app.imap.search import SearchQueryBuilder

__all__ = [
    "Address",
    "AuthenticationFailed",
    "BlockedHost",
    "ConnectOptions",
    "ConnectionLost",
    "EmailManager",
    "FolderManager",
    "FolderNode",
    "FolderNotFound",
    "FolderReadOnly",
    "FolderStatus",
    "FolderType",
    "ImapConfig",
    "ImapConnection",
    "ImapError",
    "ImapPassword",
    "NetworkError",
    "ParsedMessage",
    "ProtocolError",
    "RemoteFolder",
    "ResponseTooLarge",
    "SearchQueryBuilder",
    "Security",
    "SelectedFolder",
    "ServerUnavailable",
    "TimedOut",
    "TlsFailed",
    "Unreachable",
    "connect",
]
