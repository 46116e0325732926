"""A folder of a mailbox, with the checkpoint the incremental sync resumes from.

The checkpoint is the folder's view of the server at the end of the last
consistent batch: `uidvalidity`, `uidnext`, `highestmodseq` (RFC 7162) and
`last_seen_uid`, the high mark. A first sync fills in newest-first: `low_uid`
is the lowest UID fetched so far, and `backfill_done` says nothing older
within the window is left. `sync_since` is that window's first day, fixed at
the first sync, so a UIDVALIDITY reset rescans exactly what was synced.
`outdated_since` marks a folder gone from the server that still holds synced
mail.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model, enum_type
from app.imap import FolderType


class FolderBase(Model):
    full_name: str
    name: str
    delimiter: str | None = Field(default=None, max_length=8)
    type: FolderType = Field(default=FolderType.OTHER, sa_type=enum_type(FolderType))
    sync_enabled: bool = False


class Folder(FolderBase, table=True):
    __table_args__ = (sa.UniqueConstraint("mailbox_id", "full_name"),)

    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", ondelete="CASCADE")
    parent_id: int | None = Field(
        default=None, foreign_key="folder.id", ondelete="SET NULL", index=True
    )
    uidvalidity: int | None = Field(default=None, sa_type=sa.BigInteger)
    uidnext: int | None = Field(default=None, sa_type=sa.BigInteger)
    highestmodseq: int | None = Field(default=None, sa_type=sa.BigInteger)
    last_seen_uid: int = Field(default=0, sa_type=sa.BigInteger)
    low_uid: int | None = Field(default=None, sa_type=sa.BigInteger)
    backfill_done: bool = False
    message_count: int = 0
    outdated_since: datetime | None = None
    synced_at: datetime | None = None
    sync_since: date | None = None
