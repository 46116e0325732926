"""Turn one fetched message (RFC 5322 bytes + FETCH metadata) into an immutable record.

    parse_message(raw, uid=..., flags=..., ...) -> ParsedMessage
      header fields, each read apart ......... app.imap.headers (addresses, dates, ids)
      the MIME tree: bodies, attachments ..... app.imap.mime_walk (on app.imap.mime_scan's
                                               lines and app.imap.mime_headers' readings)
      charsets, encoded words, base64 ........ app.imap.text_decoding

Nothing here raises on bad input: each problem becomes a line in
``ParsedMessage.defects`` and parsing goes on with the best reading available.
A header the stdlib cannot read costs that header only. A body walk that fails
(run out of stack, say) keeps the parts it read and every header field; should
anything else fail, the message keeps what the FETCH gave (UID, flags, size,
dates), its header text and Message-ID, with the reason as a defect, so the
sync stores it and goes on. Text comes out without NUL characters or lone
surrogates, and dates only within what the database gives back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.imap.headers import Address, aware, message_ids, parse_date, read_addresses
from app.imap.mime_scan import MimeScanner
from app.imap.mime_walk import AttachmentInfo, MimeWalker, Place
from app.imap.text_decoding import decode_8bit, decode_words, read_or_fall_back, scrub, unfold

# The record's parts, for the IMAP layer's users (the sync engine, the API's schemas).
__all__ = ["Address", "AttachmentInfo", "ParsedMessage", "normalise_flags", "parse_message"]

_MAX_DEFECTS = 50
_MAX_DEFECT_LENGTH = 300  # a defect may quote the input; a hostile one stays short
_SYSTEM_FLAGS = {
    flag.lower(): flag
    for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    uid: int
    size: int
    flags: frozenset[str]
    internal_date: datetime | None
    gm_msgid: int | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None
    text: str | None
    html: str | None
    attachments: tuple[AttachmentInfo, ...]
    headers: str
    defects: tuple[str, ...]

    @property
    def seen(self) -> bool:
        return "\\Seen" in self.flags

    @property
    def flagged(self) -> bool:
        return "\\Flagged" in self.flags

    @property
    def has_attachments(self) -> bool:
        """Say whether a part is attached for its own sake (inline images do not count)."""
        return any(not attachment.inline for attachment in self.attachments)

    @property
    def malformed(self) -> bool:
        return bool(self.defects)

    def without_content(self, reason: str) -> ParsedMessage:
        """Keep what the FETCH gave (UID, flags, size, dates) and the Message-ID; say why."""
        return replace(self, headers="", defects=(*self.defects, reason), **_NO_CONTENT)

    @property
    def thread_key(self) -> str | None:
        """Return the conversation root: first References id, else In-Reply-To, else own id."""
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id


def parse_message(
    raw: bytes,
    *,
    uid: int,
    flags: Iterable[str | bytes] = (),
    internal_date: datetime | None = None,
    size: int | None = None,
    gm_msgid: int | None = None,
) -> ParsedMessage:
    """Parse one message best-effort; problems land in ``defects``, never in an exception.

    A naive ``internal_date`` is taken as local time (what imapclient returns by
    default) and made aware.
    """
    fetched = _Fetched(
        uid=uid,
        size=len(raw) if size is None else size,
        flags=normalise_flags(flags),
        internal_date=aware(internal_date),
        gm_msgid=gm_msgid,
    )
    try:
        return _parse(raw, fetched)
    except Exception as exc:  # the last line of defence: a message is stored, never lost
        return _unreadable(raw, fetched, exc)


# A message's content as one stored without it has it: no addresses, dates, bodies or
# attachments (what the FETCH gave, the identity and the defects stay).
_NO_CONTENT: dict[str, Any] = {
    "in_reply_to": None,
    "references": (),
    "subject": "",
    "sender": None,
    "to": (),
    "cc": (),
    "bcc": (),
    "reply_to": (),
    "date": None,
    "text": None,
    "html": None,
    "attachments": (),
}


@dataclass(frozen=True, slots=True)
class _Fetched:
    """What the FETCH response says of a message, besides its bytes."""

    uid: int
    size: int
    flags: frozenset[str]
    internal_date: datetime | None
    gm_msgid: int | None


def _parse(raw: bytes, fetched: _Fetched) -> ParsedMessage:
    """Read the header fields one by one and walk the body; each reader is total on its own."""
    walker = MimeWalker(raw)
    header_end, body_start, _ = walker.read_header(0, ())
    defects = walker.defects
    fields = walker.fields(0, header_end, "header")
    read_or_fall_back(
        lambda: walker.body(fields, body_start, "", Place(), is_message=True, cut=None),
        lambda: None,
        defects,
        "body (kept as far as it was read)",
    )

    def address_field(name: str) -> tuple[Address, ...]:
        if name not in fields:
            return ()
        addresses, found = read_addresses(decode_8bit(fields[name]))
        defects.extend(f"{name} {defect}" for defect in found)
        return addresses

    senders = address_field("from")
    if not senders:
        defects.append("no From address")
    date = None
    if "date" in fields:
        date = parse_date(decode_8bit(fields["date"]), defects)
    else:
        defects.append("missing Date header")
    own_ids = message_ids(decode_8bit(fields.get("message-id", b"")))
    reply_ids = message_ids(decode_8bit(fields.get("in-reply-to", b"")))
    html = walker.html
    return ParsedMessage(
        uid=fetched.uid,
        size=fetched.size,
        flags=fetched.flags,
        internal_date=fetched.internal_date,
        gm_msgid=fetched.gm_msgid,
        message_id=own_ids[0] if own_ids else None,
        in_reply_to=reply_ids[0] if reply_ids else None,
        references=tuple(message_ids(decode_8bit(fields.get("references", b"")))),
        subject=decode_words(
            unfold(decode_8bit(fields.get("subject", b""))), defects, "subject"
        ).strip(),
        sender=senders[0] if senders else None,
        to=address_field("to"),
        cc=address_field("cc"),
        bcc=address_field("bcc"),
        reply_to=address_field("reply-to"),
        date=date,
        text=walker.text,
        html=html,
        attachments=tuple(found.info(html) for found in walker.attachments),
        headers=scrub(decode_8bit(raw[:header_end]), defects, "header"),
        defects=_summarise(defects),
    )


def _unreadable(raw: bytes, fetched: _Fetched, error: Exception) -> ParsedMessage:
    """Keep what the FETCH gave, the header text and the Message-ID, and say why."""
    defects = [f"message could not be parsed ({type(error).__name__}): stored with its header only"]

    def header_only() -> tuple[str | None, str]:
        scanner = MimeScanner(raw)
        end, _, _ = scanner.read_header(0, ())
        ids = message_ids(decode_8bit(scanner.fields(0, end, "header").get("message-id", b"")))
        return (ids[0] if ids else None), scrub(decode_8bit(raw[:end]), defects, "header")

    message_id, headers = read_or_fall_back(header_only, lambda: (None, ""), defects, "header")
    return ParsedMessage(
        uid=fetched.uid,
        size=fetched.size,
        flags=fetched.flags,
        internal_date=fetched.internal_date,
        gm_msgid=fetched.gm_msgid,
        message_id=message_id,
        headers=headers,
        defects=_summarise(defects),
        **_NO_CONTENT,
    )


def normalise_flags(flags: Iterable[str | bytes]) -> frozenset[str]:
    """Return IMAP flags as text; system flags (case-insensitive) in their canonical case."""
    texts = (
        flag.decode("utf-8", errors="replace") if isinstance(flag, bytes) else flag
        for flag in flags
    )
    return frozenset(_SYSTEM_FLAGS.get(text.lower(), text) for text in texts)


def _summarise(defects: list[str]) -> tuple[str, ...]:
    """Drop repeated defects and keep at most _MAX_DEFECTS, so a hostile message stays small."""
    if not defects:
        return ()
    unique = list(dict.fromkeys(defect[:_MAX_DEFECT_LENGTH] for defect in defects))
    if len(unique) <= _MAX_DEFECTS:
        return tuple(unique)
    hidden = len(unique) - _MAX_DEFECTS + 1
    return (*unique[: _MAX_DEFECTS - 1], f"... and {hidden} more problems")
