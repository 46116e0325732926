"""Failures of the sync layer that are not the IMAP server's (see `app.imap.errors` for those)."""

from __future__ import annotations


class SyncError(Exception):
    """Base of the sync layer's errors; `code` is stable and safe to show."""

    code = "sync_error"


class MailboxNotFoundError(SyncError):
    code = "mailbox_not_found"
