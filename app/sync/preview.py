"""Say what syncing an account would cost, from the connection check's one session.

    LIST with STATUS (MESSAGES UNSEEN [SIZE]) (RFC 5819), else STATUS per folder
      -> every selectable folder's messages and unseen; bytes where the server
         offers STATUS=SIZE (RFC 8438)
    each folder a new mailbox syncs (inbox and sent, as registration enables them)
      EXAMINE -> UID SEARCH SINCE <window start> -> UID FETCH (RFC822.SIZE) in chunks
      -> the messages and bytes a first sync would fetch
    estimate: a cost per message plus a transfer rate per byte (figures below)

Nothing is downloaded but sizes, and EXAMINE never sets \\Seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from app.config import Settings
from app.db.models import utcnow
from app.imap import ImapConnection
from app.imap.email_manager import EmailManager, chunked
from app.imap.folder_manager import FolderCounts, RemoteFolder
from app.sync.folders import ENABLED_BY_DEFAULT

# A first sync spends about 1.4 ms of our own work per message (bench/README.md, "First
# sync over plain IMAP": 620-820 msg/s on a loopback Dovecot, CPU-bound), and moves its
# bytes at the network's pace: 2 MB/s stands in for a remote server's link.
SECONDS_PER_MESSAGE = 1 / 700
BYTES_PER_SECOND = 2_000_000
_SIZE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class FolderPreview:
    """One folder's counts, and for a folder a new mailbox syncs, what its window holds."""

    full_name: str
    counts: FolderCounts | None  # None: the server refused STATUS for it
    synced: bool
    window_messages: int | None
    window_bytes: int | None


@dataclass(frozen=True, slots=True)
class SyncPreview:
    """What a first sync would fetch, and about how long it would take."""

    window_start: date
    folders: list[FolderPreview]
    messages: int
    bytes: int
    estimated_seconds: float


def new_mailbox_window_start(settings: Settings) -> date:
    """The first day a new mailbox's first sync reaches back to (SYNC_WINDOW_DAYS)."""
    return utcnow().date() - timedelta(days=settings.sync_window_days)


def preview_sync(
    connection: ImapConnection,
    folders: list[RemoteFolder],
    counts: dict[str, FolderCounts],
    window_start: date,
) -> SyncPreview:
    """Measure the first-sync window of the folders a new mailbox would sync."""
    mail = EmailManager(connection)
    previews = []
    for folder in folders:
        if not folder.selectable:
            continue
        synced = folder.type in ENABLED_BY_DEFAULT
        window_messages = window_bytes = None
        if synced:
            mail.select_folder(folder.full_name)
            uids = mail.search(mail.query().since(window_start).build())
            window_messages = len(uids)
            window_bytes = sum(
                size or 0
                for batch in chunked(uids, _SIZE_CHUNK)
                for size in mail.sizes(batch).values()
            )
        counted = counts.get(folder.full_name)
        previews.append(
            FolderPreview(folder.full_name, counted, synced, window_messages, window_bytes)
        )
    messages = sum(p.window_messages or 0 for p in previews)
    total_bytes = sum(p.window_bytes or 0 for p in previews)
    return SyncPreview(
        window_start=window_start,
        folders=previews,
        messages=messages,
        bytes=total_bytes,
        estimated_seconds=round(messages * SECONDS_PER_MESSAGE + total_bytes / BYTES_PER_SECOND, 1),
    )
