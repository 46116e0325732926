"""Change which folders of a mailbox are synced, then refresh its folder list at once.

    every folder id is the mailbox's? -- no --> UnknownFoldersError, nothing saved
    save the flags (one transaction)
    a folder was enabled? ------------- yes --> next_sync_at no later than one interval away
    folders-only sync now (LIST, no mail) ----> SyncResult, or None: another worker holds
                                                the lease (the flags are saved all the same)

When a mailbox's folder settings change, only its folders are synchronized
(no mail) right away; mail follows at the next scheduled run (docs/architecture.md,
"The folder list").
A folders-only run leaves `next_sync_at` alone, so the next scheduled run is
the one already planned; only a failure backoff could push it further (up to
24 hours after failed logins), and a folder the user just enabled should not
wait that long once the folder refresh shows the server answering again. So
enabling a folder pulls `next_sync_at` in to one interval from now at most;
if the folders-only run then fails, the engine's backoff applies as usual.
A re-enabled folder resumes from its own checkpoint: disabled folders are
never touched by a run, so nothing that arrived meanwhile is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import Mailbox, SyncTrigger, utcnow
from app.db.repositories.folders import mailbox_folders
from app.db.repositories.mailboxes import get_mailbox
from app.sync.errors import MailboxNotFoundError, UnknownFoldersError
from app.sync.service import SyncResult, sync_mailbox


@dataclass(frozen=True, slots=True)
class FolderSyncSetting:
    """Whether the folder with this id is synced; a folder listed twice takes its last value."""

    folder_id: int
    sync_enabled: bool


def save_folder_settings(
    engine: Engine,
    settings: Settings,
    mailbox_id: int,
    changes: Sequence[FolderSyncSetting],
    *,
    trigger: SyncTrigger = SyncTrigger.API,
) -> SyncResult | None:
    """Save the folders' sync flags, then sync the folder list only; None when the lease is held."""
    with session_scope(engine) as session:
        mailbox = get_mailbox(session, mailbox_id)
        if mailbox is None:
            raise MailboxNotFoundError(f"mailbox {mailbox_id} does not exist")
        folders = {folder.id: folder for folder in mailbox_folders(session, mailbox_id)}
        unknown = sorted({change.folder_id for change in changes} - folders.keys())
        if unknown:
            raise UnknownFoldersError(mailbox_id, unknown)
        enabled = False
        for change in changes:
            folder = folders[change.folder_id]
            enabled = enabled or (change.sync_enabled and not folder.sync_enabled)
            folder.sync_enabled = change.sync_enabled
        if enabled:
            _plan_mail_within_one_interval(mailbox, settings)
    return sync_mailbox(engine, mailbox_id, settings, folders_only=True, trigger=trigger)


def _plan_mail_within_one_interval(mailbox: Mailbox, settings: Settings) -> None:
    latest = utcnow() + timedelta(minutes=settings.sync_interval_minutes)
    if mailbox.next_sync_at is not None and mailbox.next_sync_at > latest:
        mailbox.next_sync_at = latest
