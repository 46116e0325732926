"""Where a message lives: one row per (folder, UID).

Moves and copies add or drop links, never emails. `UNIQUE (folder_id, uid)`
makes a repeated batch after a crash harmless.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model


class EmailFolderBase(Model):
    uid: int = Field(sa_type=sa.BigInteger)
    modseq: int | None = Field(default=None, sa_type=sa.BigInteger)


class EmailFolder(EmailFolderBase, table=True):
    __tablename__ = "email_folder"
    __table_args__ = (sa.UniqueConstraint("folder_id", "uid"),)

    id: int | None = Field(default=None, primary_key=True)
    email_id: int = Field(foreign_key="email.id", ondelete="CASCADE", index=True)
    folder_id: int = Field(foreign_key="folder.id", ondelete="CASCADE")
