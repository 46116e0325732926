"""One message of a mailbox, however many folders (`email_folder`) hold it.

`identity` is the deduplication key the sync computes: `gm:<X-GM-MSGID>` on
Gmail, else `mid:<Message-ID>`, else `h:<sha256 of date, from, subject,
size>`. It is indexed but not unique: two UIDs of one folder with the same
identity stay two emails, and only the sync decides when to merge.

The API lists by `(mailbox_id, date, id)`; a B-tree is walked backwards for
`ORDER BY date DESC, id DESC`, so no descending index is needed.
Address lists are JSON `[{"name": ..., "email": ...}]`; assign a new list to
change one (in-place mutation of a JSON value is not tracked).
`defects` lists, one sentence each, what the parser had to guess or leave out
(an unreadable header, a broken MIME boundary, a body not stored): the email is
stored all the same, and the API shows why it may look incomplete.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field
from typing_extensions import TypedDict

from app.db.models.base import Model, utcnow


class MailAddress(TypedDict):
    """One parsed address of a header; `name` is the display name, if any."""

    name: str | None
    email: str


class EmailBase(Model):
    message_id: str | None = None
    in_reply_to: str | None = None
    references: str | None = Field(default=None, sa_type=sa.Text)
    thread_key: str | None = None
    subject: str | None = Field(default=None, sa_type=sa.Text)
    from_name: str | None = None
    from_email: str | None = Field(default=None, max_length=320)
    to: list[MailAddress] = Field(default_factory=list, sa_type=sa.JSON)
    cc: list[MailAddress] = Field(default_factory=list, sa_type=sa.JSON)
    bcc: list[MailAddress] = Field(default_factory=list, sa_type=sa.JSON)
    reply_to: list[MailAddress] = Field(default_factory=list, sa_type=sa.JSON)
    date: datetime | None = None
    received_at: datetime | None = None
    size: int = 0
    seen: bool = False
    flagged: bool = False
    answered: bool = False
    draft: bool = False
    has_attachments: bool = False


class Email(EmailBase, table=True):
    __table_args__ = (
        sa.Index("ix_email_mailbox_id_date_id", "mailbox_id", "date", "id"),
        sa.Index("ix_email_mailbox_id_thread_key", "mailbox_id", "thread_key"),
        sa.Index("ix_email_mailbox_id_identity", "mailbox_id", "identity"),
        sa.Index("ix_email_mailbox_id_from_email", "mailbox_id", "from_email"),
    )

    id: int | None = Field(default=None, primary_key=True)
    mailbox_id: int = Field(foreign_key="mailbox.id", ondelete="CASCADE")
    identity: str
    gm_msgid: int | None = Field(default=None, sa_type=sa.BigInteger)
    text_body: str | None = Field(default=None, sa_type=sa.Text)
    html_body: str | None = Field(default=None, sa_type=sa.Text)
    headers: str | None = Field(default=None, sa_type=sa.Text)
    defects: list[str] = Field(
        default_factory=list, sa_type=sa.JSON, sa_column_kwargs={"server_default": "[]"}
    )
    created_at: datetime = Field(default_factory=utcnow)
