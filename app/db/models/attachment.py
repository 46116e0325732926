"""A MIME part of an email shown as an attachment; its bytes stay on the server."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field

from app.db.models.base import Model


class AttachmentBase(Model):
    n: int = Field(description="Ordinal within the email, from 0; the API addresses parts by it.")
    filename: str | None = Field(default=None, sa_type=sa.Text)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int = 0
    content_id: str | None = None


class Attachment(AttachmentBase, table=True):
    __table_args__ = (sa.UniqueConstraint("email_id", "n"),)

    id: int | None = Field(default=None, primary_key=True)
    email_id: int = Field(foreign_key="email.id", ondelete="CASCADE")
    part_id: str = Field(
        max_length=1024, description="IMAP BODYSTRUCTURE section, e.g. 2.1; deep nesting is long."
    )
    inline: bool = False
