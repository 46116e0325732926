"""Local mail as the API shows it: `EmailSummary` in lists, `EmailRead` with bodies.

`from` is a Python keyword, so the field is `from_` in code and `from` on the
wire (alias), in JSON and in the OpenAPI document alike.

A list page is written straight from column values to JSON, laid out as
`Page[EmailSummary]` is (the model documents it; tests hold the body to it).
The values already have the columns' types, and building a model for every
summary, address and link only to dump it again was a large share of a page's
CPU and most of the objects the garbage collector traced. `EmailRead` is
validated from the same layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import to_json

from app.api.request_models import RequestModel
from app.db.models import Attachment, Email, MailAddress
from app.db.repositories.emails import EmailPage, FolderUid

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


class AttachmentRead(BaseModel):
    """A part shown as an attachment; download it at `.../attachments/{n}`."""

    n: int
    filename: str | None
    content_type: str
    size: int = Field(description="Decoded size in bytes.")
    content_id: str | None = Field(description="Content-ID without angle brackets.")
    inline: bool = Field(description="Shown inside the HTML body (a `cid:` image) or inline.")


class EmailFlagsUpdate(RequestModel):
    """Flags to store on the server and locally; an omitted one stays as it is."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    # Left out means "keep"; null is no value at all, so the document and the API refuse it.
    seen: Annotated[
        bool | None,
        WithJsonSchema({"type": "boolean", "description": "\\Seen: the message was read."}),
    ] = None
    flagged: Annotated[
        bool | None,
        WithJsonSchema({"type": "boolean", "description": "\\Flagged: marked for attention."}),
    ] = None

    @field_validator("seen", "flagged", mode="before")
    @classmethod
    def _true_or_false(cls, value: object) -> object:
        if value is None:
            raise ValueError("must be true or false; leave the field out to keep the flag")
        return value

    @model_validator(mode="after")
    def _something_to_store(self) -> EmailFlagsUpdate:
        if self.seen is None and self.flagged is None:
            raise ValueError("give seen, flagged or both")
        return self


class EmailRead(EmailSummary):
    """One email with its bodies and the list of its attachments."""

    bcc: list[Address]
    reply_to: list[Address]
    in_reply_to: str | None
    references: list[str] = Field(description="Message-IDs of the References header, in order.")
    text: str | None
    html: str | None
    attachments: list[AttachmentRead]
    defects: list[str] = Field(
        description="What could not be read of the message, one sentence each (an unreadable "
        "header, a broken MIME structure, a body not stored): the email is kept all the same, "
        "with what could be read. Empty for a well-formed message."
    )

    @classmethod
    def of_detail(
        cls, email: Email, links: Sequence[FolderUid], attachments: list[Attachment]
    ) -> EmailRead:
        return cls.model_validate(
            {
                **_summary_item(email.model_dump(), links),
                "bcc": email.bcc,
                "reply_to": email.reply_to,
                "in_reply_to": email.in_reply_to,
                "references": email.references.split() if email.references else [],
                "text": email.text_body,
                "html": email.html_body,
                "attachments": [
                    AttachmentRead.model_validate(attachment, from_attributes=True)
                    for attachment in attachments
                ],
                "defects": email.defects,
            }
        )


def summary_page_json(page: EmailPage, next_cursor: str | None) -> bytes:
    """Render a page of the list as the JSON of a `Page[EmailSummary]`."""
    items = [_summary_item(row, page.links[row["id"]]) for row in page.rows]
    return to_json({"items": items, "next_cursor": next_cursor})


def _summary_item(columns: Mapping[Any, Any], links: Sequence[FolderUid]) -> dict[str, object]:
    """Lay out an email's columns (`Email`'s names) and links as `EmailSummary` on the wire:
    its field order, `from` by its alias, addresses and links with only their fields."""
    sender_name, sender_email = columns["from_name"], columns["from_email"]
    return {
        "id": columns["id"],
        "mailbox_id": columns["mailbox_id"],
        "folders": [{"folder_id": link.folder_id, "uid": link.uid} for link in links],
        "message_id": columns["message_id"],
        "subject": columns["subject"],
        "from": (
            None
            if sender_name is None and sender_email is None
            else {"name": sender_name, "email": sender_email or ""}
        ),
        "to": _addresses(columns["to"]),
        "cc": _addresses(columns["cc"]),
        "date": columns["date"],
        "seen": columns["seen"],
        "flagged": columns["flagged"],
        "has_attachments": columns["has_attachments"],
        "size": columns["size"],
        "thread_key": columns["thread_key"],
    }


def _addresses(stored: Iterable[MailAddress]) -> list[dict[str, str | None]]:
    return [{"name": address["name"], "email": address["email"]} for address in stored]
