"""Build RFC 5322 test messages as bytes, ready to APPEND to the test Dovecot."""

from __future__ import annotations

import itertools
import re
from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from tests.support.dovecot import MailUser

_counter = itertools.count(1)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    inline_cid: str | None = None


def make_message(
    *,
    subject: str = "Hello",
    sender: str = "Alice Example <alice@example.com>",
    to: str = "Bob Example <bob@example.com>",
    cc: str | None = None,
    bcc: str | None = None,
    date: datetime | None = None,
    text: str | None = "Hello Bob,\n\nthis is a test.\n",
    html: str | None = None,
    attachments: tuple[Attachment, ...] = (),
    message_id: str | None = "auto",
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Return one well-formed message; `message_id="auto"` makes a unique one, None omits it."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if bcc:
        msg["Bcc"] = bcc
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    if message_id == "auto":
        message_id = f"<test-{next(_counter)}-{datetime.now(UTC).timestamp()}@example.com>"
    if message_id:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    for attachment in attachments:
        maintype, subtype = attachment.content_type.split("/", 1)
        if attachment.inline_cid:
            msg.add_related(
                attachment.content,
                maintype=maintype,
                subtype=subtype,
                cid=f"<{attachment.inline_cid}>",
                filename=attachment.filename,
            )
        else:
            msg.add_attachment(
                attachment.content,
                maintype=maintype,
                subtype=subtype,
                filename=attachment.filename,
            )
    return msg.as_bytes(policy=SMTP)


RECENT = datetime.now(UTC) - timedelta(days=30)


# Messages of the batch a kill must hit carry this much: fetching them takes long enough
# for the test to see the batch started and kill the sync before it commits.
HEAVY_ATTACHMENT = Attachment("scan.bin", b"\x00" * 128 * 1024)


_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)(?::(\d+))?\]")


def append_many(
    user: MailUser, folder: str, tag: str, count: int, heavy: Container[int] = ()
) -> list[int]:
    """APPEND `count` messages in one MULTIAPPEND (RFC 3502); return their UIDs.

    Message n has Message-ID <tag-n@example.com>; those numbered in `heavy` carry
    HEAVY_ATTACHMENT. Each is a copy of one built message with its number stamped in:
    building hundreds one by one would take seconds.
    """
    light, weighty = (
        make_message(subject="{tag} {n}", message_id="<{tag}-{n}@example.com>", attachments=a)
        for a in ((), (HEAVY_ATTACHMENT,))
    )
    messages = [
        {
            "msg": (weighty if n in heavy else light)
            .replace(b"{tag}", tag.encode())
            .replace(b"{n}", str(n).encode()),
            "date": RECENT + timedelta(minutes=n),
        }
        for n in range(count)
    ]
    client = user.client()
    try:
        _, [response] = client.multiappend(folder, messages)
    finally:
        client.logout()
    match = _APPENDUID.search(response)
    assert match is not None, response
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    assert last - first + 1 == count
    return list(range(first, last + 1))


def expected_message_ids(tag: str, count: int) -> set[str]:
    return {f"<{tag}-{n}@example.com>" for n in range(count)}
