"""Local mail as the API shows it: `EmailSummary` in lists, `EmailRead` with bodies.

`from` is a Python keyword, so the field is `from_` in code and `from` on the
wire (alias), in JSON and in the OpenAPI document alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from app.db.models import Attachment, Email, EmailFolder, MailAddress

# Ids are INTEGER columns: a larger number would be a database error, so it is a 422.


def text_filter(description: str, *, alias: str | None = None) -> Any:
    """Declare a substring filter; NUL is refused (PostgreSQL text cannot hold it)."""
    return Query(
        alias=alias, min_length=1, max_length=500, pattern=r"^[^\x00]+$", description=description
    )


class Address(BaseModel):
    """A mail address and its display name (null when the header gave none)."""

    name: str | None
    email: str

    @classmethod
    def of_sender(cls, name: str | None, email: str | None) -> Address | None:
        return None if email is None and name is None else cls(name=name, email=email or "")

    @classmethod
    def list_of(cls, addresses: Iterable[MailAddress]) -> list[Address]:
        return [cls(name=address["name"], email=address["email"]) for address in addresses]


class FolderLink(BaseModel):
    """A folder holding the email and the message's UID there."""

    folder_id: int
    uid: int


class EmailSummary(BaseModel):
    """An email without bodies, as lists show it."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    id: int
    mailbox_id: int
    folders: list[FolderLink]
    message_id: str | None
    subject: str | None
    from_: Address | None = Field(alias="from")
    to: list[Address]
    cc: list[Address]
    date: datetime | None = Field(description="The Date header, in UTC.")
    seen: bool
    flagged: bool
    has_attachments: bool = Field(description="Whether a part is attached (inline images aside).")
    size: int = Field(description="RFC822.SIZE in bytes.")
    thread_key: str | None = Field(
        description="The conversation's root Message-ID (References, else In-Reply-To, else "
        "its own); filter a list with `thread` to get the conversation."
    )

    @classmethod
    def of(cls, email: Email, links: list[EmailFolder]) -> EmailSummary:
        return cls.model_validate(_summary_fields(email, links))


class AttachmentRead(BaseModel):
    """A part shown as an attachment; download it at `.../attachments/{n}`."""

    n: int
    filename: str | None
    content_type: str
    size: int = Field(description="Decoded size in bytes.")
    content_id: str | None = Field(description="Content-ID without angle brackets.")
    inline: bool = Field(description="Shown inside the HTML body (a `cid:` image) or inline.")


class EmailRead(EmailSummary):
    """One email with its bodies and the list of its attachments."""

    bcc: list[Address]
    reply_to: list[Address]
    in_reply_to: str | None
    references: list[str] = Field(description="Message-IDs of the References header, in order.")
    text: str | None
    html: str | None
    attachments: list[AttachmentRead]

    @classmethod
    def of_detail(
        cls, email: Email, links: list[EmailFolder], attachments: list[Attachment]
    ) -> EmailRead:
        return cls.model_validate(
            {
                **_summary_fields(email, links),
                "bcc": Address.list_of(email.bcc),
                "reply_to": Address.list_of(email.reply_to),
                "in_reply_to": email.in_reply_to,
                "references": email.references.split() if email.references else [],
                "text": email.text_body,
                "html": email.html_body,
                "attachments": [
                    AttachmentRead.model_validate(attachment, from_attributes=True)
                    for attachment in attachments
                ],
            }
        )


def _summary_fields(email: Email, links: list[EmailFolder]) -> dict[str, object]:
    assert email.id is not None, "rows read from the database have an id"
    return {
        "id": email.id,
        "mailbox_id": email.mailbox_id,
        "folders": [FolderLink(folder_id=link.folder_id, uid=link.uid) for link in links],
        "message_id": email.message_id,
        "subject": email.subject,
        "from_": Address.of_sender(email.from_name, email.from_email),
        "to": Address.list_of(email.to),
        "cc": Address.list_of(email.cc),
        "date": email.date,
        "seen": email.seen,
        "flagged": email.flagged,
        "has_attachments": email.has_attachments,
        "size": email.size,
        "thread_key": email.thread_key,
    }
