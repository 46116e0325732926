"""The database rows of a fetched message: its `email` columns and its `attachment` rows.

Values are cleaned here for what every database takes: no NUL characters
(PostgreSQL text cannot hold them), addresses cut to RFC 5321's length and
thread keys hashed when too long for a B-tree index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from app.db.models import MailAddress
from app.imap.message import Address, ParsedMessage

_MAX_ADDRESS = 320  # RFC 5321's limit; the column is indexed
_MAX_INDEXED_KEY = 200


def _clean(text: str | None) -> str | None:
    """Drop NUL characters: PostgreSQL text cannot hold them."""
    return text.replace("\x00", "\ufffd") if text else text


def _addresses(addresses: tuple[Address, ...]) -> list[MailAddress]:
    return [{"name": _clean(a.name) or None, "email": _clean(a.email) or ""} for a in addresses]


def _index_safe(key: str | None) -> str | None:
    """Hash keys too long for a B-tree index (PostgreSQL refuses ~2.7 kB), as identities are."""
    if key is None or len(key) <= _MAX_INDEXED_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def email_row(mailbox_id: int, identity: str, message: ParsedMessage) -> dict[str, Any]:
    """Return the `email` columns of a fetched message (`created_at` is the column default)."""
    return {
        "mailbox_id": mailbox_id,
        "identity": identity,
        "gm_msgid": message.gm_msgid,
        "message_id": _clean(message.message_id),
        "in_reply_to": _clean(message.in_reply_to),
        "references": _clean(" ".join(message.references)) or None,
        "thread_key": _index_safe(_clean(message.thread_key)),
        "subject": _clean(message.subject),
        "from_name": _clean(message.sender.name) or None if message.sender else None,
        "from_email": _clean(message.sender.email[:_MAX_ADDRESS]) if message.sender else None,
        "to": _addresses(message.to),
        "cc": _addresses(message.cc),
        "bcc": _addresses(message.bcc),
        "reply_to": _addresses(message.reply_to),
        "date": message.date,
        "received_at": message.internal_date,
        "size": message.size,
        "seen": message.seen,
        "flagged": message.flagged,
        "answered": "\\Answered" in message.flags,
        "draft": "\\Draft" in message.flags,
        "has_attachments": message.has_attachments,
        "text_body": _clean(message.text),
        "html_body": _clean(message.html),
        "headers": _clean(message.headers),
        "defects": list(message.defects),
    }


def attachment_rows(email_id: int, message: ParsedMessage) -> Iterator[dict[str, Any]]:
    for n, attachment in enumerate(message.attachments):
        yield {
            "email_id": email_id,
            "n": n,
            "part_id": attachment.part_id,
            "filename": _clean(attachment.filename),
            "content_type": attachment.content_type[:255],
            "size": attachment.size,
            "content_id": _clean(attachment.content_id),
            "inline": attachment.inline,
        }
