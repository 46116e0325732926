"""The synchronization engine and the other services that need a live IMAP server.

What this module exports is what the API may use of the package (it imports
nothing else of it): the services a route calls, their inputs and results, and
the errors the problem table maps.
"""

from app.sync.attachments import fetch_attachment, fetch_message_source
from app.sync.connection_check import ConnectionReport, Credential, ServerSettings, check_connection
from app.sync.credentials import interactive_login_options
from app.sync.errors import (
    AttachmentNotFoundError,
    CredentialsRequiredError,
    DatabaseUnavailableError,
    EmailNotFoundError,
    FolderDivergedError,
    LeaseLostError,
    MailboxNotFoundError,
    MessageGoneError,
    PlaintextRefusedError,
    ProviderHostRequiredError,
    SyncError,
    UnknownFoldersError,
)
from app.sync.flag_writeback import write_flags
from app.sync.folder_settings import FolderSyncSetting, save_folder_settings
from app.sync.health import (
    Backfill,
    FleetHealth,
    HealthState,
    MailboxHealth,
    WatchState,
    fleet_health,
    mailbox_health,
)
from app.sync.mailboxes import (
    KEEP,
    MailboxChanges,
    Owner,
    Registration,
    change_mailbox,
    complete_oauth_mailbox,
    register_mailbox,
    remove_mailbox,
)
from app.sync.preview import FolderPreview, SyncPreview, new_mailbox_window_start
from app.sync.queued_runs import queue_sync_run
from app.sync.reconnect import complete_reconnect, start_reconnect
from app.sync.remote_search import RemoteSearchCriteria, RemoteSearchResult, search_remote_folder
from app.sync.service import SyncResult

__all__ = [
    "KEEP",
    "AttachmentNotFoundError",
    "Backfill",
    "ConnectionReport",
    "Credential",
    "CredentialsRequiredError",
    "DatabaseUnavailableError",
    "EmailNotFoundError",
    "FleetHealth",
    "FolderDivergedError",
    "FolderPreview",
    "FolderSyncSetting",
    "HealthState",
    "LeaseLostError",
    "MailboxChanges",
    "MailboxHealth",
    "MailboxNotFoundError",
    "MessageGoneError",
    "Owner",
    "PlaintextRefusedError",
    "ProviderHostRequiredError",
    "Registration",
    "RemoteSearchCriteria",
    "RemoteSearchResult",
    "ServerSettings",
    "SyncError",
    "SyncPreview",
    "SyncResult",
    "UnknownFoldersError",
    "WatchState",
    "change_mailbox",
    "check_connection",
    "complete_oauth_mailbox",
    "complete_reconnect",
    "fetch_attachment",
    "fetch_message_source",
    "fleet_health",
    "interactive_login_options",
    "mailbox_health",
    "new_mailbox_window_start",
    "queue_sync_run",
    "register_mailbox",
    "remove_mailbox",
    "save_folder_settings",
    "search_remote_folder",
    "start_reconnect",
    "write_flags",
]
