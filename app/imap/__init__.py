"""The IMAP protocol layer on imapclient, usable on its own as a library.

    with connect(ImapConfig(host=..., username=..., password=...)) as conn:
        mail = EmailManager(conn)
        mail.select_folder("INBOX")
        emails = mail.find(mail.query().sender("a@example.com").build())
        folders = FolderManager(conn).folders()

It knows nothing of the database or HTTP. Watching for changes takes an asyncio
session instead, thousands to a process: `app.imap.aio_client.connect_async`
(IDLE, NOTIFY), on the same TLS set-up, SSRF guard and typed errors.
"""

from app.imap.config import ConnectOptions, ImapConfig
from app.imap.connection import ImapConnection, connect
from app.imap.email_manager import EmailManager, SelectedFolder
from app.imap.folder_manager import FolderManager, FolderNode, FolderStatus, RemoteFolder

__all__ = [
    "ConnectOptions",
    "EmailManager",
    "FolderManager",
    "FolderNode",
    "FolderStatus",
    "ImapConfig",
    "ImapConnection",
    "RemoteFolder",
    "SelectedFolder",
    "connect",
]
