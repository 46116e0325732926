"""Failures of the sync layer that are not the IMAP server's (see `app.imap.errors` for those)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from app.db.engine import is_unavailable

_MAX_REASON = 200


class SyncError(Exception):
    """Base of the sync layer's errors; `code` is stable and safe to show."""

    code = "sync_error"


class LeaseLostError(SyncError):
    """The run outlived its lease and another worker took the mailbox: it must stop."""

    code = "lease_lost"


class DatabaseUnavailableError(SyncError):
    """The database does not answer (down, unreachable, or locked by another connection)."""

    code = "database_unavailable"


@contextmanager
def database_outages() -> Iterator[None]:
    """Raise DatabaseUnavailableError for the errors of a database that cannot serve now.

    Other database errors (a constraint, a bad statement) pass unchanged: they are bugs
    or conflicts, and retrying would not help.
    """
    try:
        yield
    except DBAPIError as exc:
        if not is_unavailable(exc):
            raise
        lines = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
        raise DatabaseUnavailableError(
            f"the database did not answer: {lines[0][:_MAX_REASON]}"
        ) from exc


class CredentialsRequiredError(SyncError):
    """New server settings came without credentials: a stored secret never follows them."""

    code = "credentials_required"
    field = "auth"


class ProviderHostRequiredError(SyncError):
    """An OAuth mailbox was pointed away from its provider's IMAP server."""

    code = "provider_host_required"
    field = "imap.host"


class PlaintextRefusedError(SyncError):
    """`security: none` while IMAP_ALLOW_PLAINTEXT is off: no secret goes out in clear."""

    code = "plaintext_not_allowed"
    field = "imap.security"


class MailboxNotFoundError(SyncError):
    code = "not_found"  # the same code as every other missing resource of the API


class UnknownFoldersError(SyncError):
    """Folder ids that are not folders of the mailbox they were given for."""

    code = "unknown_folders"

    def __init__(self, mailbox_id: int, folder_ids: list[int]) -> None:
        self.mailbox_id = mailbox_id
        self.folder_ids = folder_ids
        listed = ", ".join(str(folder_id) for folder_id in folder_ids)
        super().__init__(f"mailbox {mailbox_id} has no folder with id {listed}")


class EmailNotFoundError(SyncError):
    code = "not_found"


class AttachmentNotFoundError(SyncError):
    code = "not_found"


class MessageGoneError(SyncError):
    """No folder on the server holds the message any more; the next sync drops it."""

    code = "gone_from_server"


class FolderDivergedError(SyncError):
    """The server contradicts itself about a folder (EXISTS against the UIDs it lists).

    The folder's checkpoint is not advanced and the run fails with this reason rather
    than record a success on a copy that may have silently diverged.
    """

    code = "folder_diverged"


class NotAnOAuthMailboxError(SyncError):
    """A reconnect popup was asked for a mailbox that logs in with a password."""

    code = "not_oauth_mailbox"


class AccountMismatchError(SyncError):
    """The reconnect popup signed in another account than the mailbox's."""

    code = "account_mismatch"
