"""Turn one fetched message (RFC 5322 bytes + FETCH metadata) into an immutable record.

The MIME tree is walked on the raw bytes by offsets, the way Dovecot's message
parser walks it, instead of through ``email.message``: the stdlib parser splits
every line into Python strings (about 1,300 typical messages/s on one core) and
disagrees with IMAP servers on broken boundaries. Part numbers follow RFC 3501
section 6.4.5, so ``AttachmentInfo.part_id`` can be fetched later as
``BODY[part_id]``::

    (message)            MULTIPART/MIXED
    1                    TEXT/PLAIN            -> text
    2                    MULTIPART/ALTERNATIVE
    2.1                  TEXT/PLAIN            (a second plain body: an attachment)
    2.2                  TEXT/HTML             -> html
    3                    MESSAGE/RFC822        -> attachment "<its subject>.eml"
    3.1                  TEXT/PLAIN            (the forwarded message's own body)
    3.2                  APPLICATION/PDF       -> attachment
    4                    IMAGE/PNG             -> attachment

A message that is not multipart has a single part "1"; an encapsulated message
numbers its body's parts under its own number ("3.1", ...).

Boundary rules copied from Dovecot 2.3 (checked against its BODYSTRUCTURE and
BODY[n] on thousands of generated and broken messages): a line starting with
``--boundary`` is a delimiter whatever follows it; of the open boundaries that
prefix a line the longest wins, the innermost on a tie; a delimiter may end a
part while its header is still being read; a delimiter cut off by the end of
the data closes; an unclosed multipart ends at the next delimiter of an
enclosing one or at the end of the data; boundaries given only in RFC 2231 form
(``boundary*=``) are not boundaries; the 100th nested multipart or message is
an opaque application/octet-stream part; after 10,000 parts no boundary counts.

Nothing here raises on bad input: each problem becomes a line in
``ParsedMessage.defects`` and parsing goes on with the best reading available.
Every header is read apart from the others, so a header the stdlib cannot read
(its address parser recurses once per ``:`` group; an RFC 2231 charset with a
NUL raises ValueError) costs that header only: the field falls back to what can
be salvaged (an empty list, the addresses found among its words, no date) and
the defect names the header and the error. A body walk that fails (run out of
stack, say) keeps the parts it read and every header field; should anything
else fail, the message keeps what the FETCH gave (UID, flags, size, dates), its
header text and Message-ID, with the reason as a defect, so the sync stores it
and goes on. Text comes out without NUL characters or lone surrogates (UTF-7
decodes to them), and dates only within what the database gives back. The
stdlib's readers slow down faster than their input grows, so they see at most
128 kB of an address list (and keep 1,000 addresses) and 16 kB of a
Content-Type or Content-Disposition value.
Attachment sizes are exact without decoding base64 (counted from the encoded
length and padding, a megabyte at a time); quoted-printable parts and broken
base64 are decoded once to be measured, then dropped. Content-Type/-Disposition
readings and address lists are cached per process: they repeat across a mailbox
(a multipart's boundary, unique to its message, is read apart from the rest).
A part's end is found by searching for its boundary, not by stopping at every
line that starts with "--".
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_tz
from functools import lru_cache
from typing import Any, TypeVar

# Dovecot's message parser limits: the 100th nested multipart or message (the root is
# the first) is an opaque application/octet-stream part, and after 10,000 parts no
# more boundaries are recognised.
_MAX_DEPTH = 99
_MAX_PARTS = 10_000
_MAX_COMMENT_DEPTH = 50
_MAX_DEFECTS = 50
_MAX_DEFECT_LENGTH = 300  # a defect may quote the input; a hostile one stays short
_MAX_ADDRESSES = 1000  # per header: a megabyte `To:` must not become a megabyte of JSON per list
# The stdlib's address parser slows down faster than the input grows (seconds for 500 kB of
# "<a:"); 1,000 real addresses fit in far less than this.
_MAX_ADDRESS_LIST_CHARS = 128 * 1024
# Its parameter parser too: 1 MB of ";" in a Content-Type took 34 s. Filenames, the longest
# real parameters, are a few hundred characters (the boundary is read apart).
_MAX_CONTENT_FIELD_CHARS = 16 * 1024
# Dates outside these years do not survive a round trip through PostgreSQL and back into
# Python's datetime in every session time zone (year 0 and year 10000 cannot be read).
_MIN_YEAR, _MAX_YEAR = 2, 9998
_CHUNK = 1 << 20
_CACHEABLE = 2048  # longer header values are parsed every time, never kept in a cache
_LF, _CR, _DASH = 0x0A, 0x0D, 0x2D
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n"
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_ENCODED_WORD = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?]*)\?=")
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")  # a header field name and its colon
_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_BOUNDARY_PARAM = re.compile(
    r';[ \t]*boundary[ \t]*=[ \t]*(?:"([^"\\]*)"|([^\s;"\\()<>@,:/\[\]?=]+))[ \t]*(?=;|\Z)',
    re.IGNORECASE,
)
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_SURROGATE = re.compile("[\ud800-\udfff]")
_ADDRESS_SEPARATORS = re.compile(r'[\s<>(),;:"\[\]]+')
_SYSTEM_FLAGS = {
    flag.lower(): flag
    for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}
# Labels whose real-world content is a superset of the named charset, or that Python
# does not know under that spelling.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "unicode-1-1-utf-7": "utf-7",
}
# Text codecs that interpret escapes instead of mapping bytes to characters.
_REFUSED_CODECS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode"})


@dataclass(frozen=True, slots=True)
class Address:
    name: str  # decoded display name, "" when none
    email: str  # addr-spec as written


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    part_id: str  # IMAP section number for BODY[part_id] (RFC 3501 section 6.4.5)
    filename: str | None  # decoded (RFC 2047 and RFC 2231)
    content_type: str  # lower-case "type/subtype"
    size: int  # decoded byte size
    content_id: str | None  # without angle brackets
    inline: bool  # Content-Disposition inline, or referenced through its Content-ID


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
        internal_date=_aware(internal_date),
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
    walker = _Walker(raw)
    header_end, body_start, _ = walker.read_header(0, ())
    defects = walker.defects
    fields = walker.fields(0, header_end, "header")
    _total(
        lambda: walker.body(fields, body_start, "", _Place(), is_message=True, cut=None),
        lambda: None,
        defects,
        "body (kept as far as it was read)",
    )

    def address_field(name: str) -> tuple[Address, ...]:
        if name not in fields:
            return ()
        addresses, found = _addresses(_decode_8bit(fields[name]))
        defects.extend(f"{name} {defect}" for defect in found)
        return addresses

    senders = address_field("from")
    if not senders:
        defects.append("no From address")
    date = None
    if "date" in fields:
        date = _parse_date(_decode_8bit(fields["date"]), defects)
    else:
        defects.append("missing Date header")
    message_ids = _message_ids(_decode_8bit(fields.get("message-id", b"")))
    reply_ids = _message_ids(_decode_8bit(fields.get("in-reply-to", b"")))
    html = walker.html
    return ParsedMessage(
        uid=fetched.uid,
        size=fetched.size,
        flags=fetched.flags,
        internal_date=fetched.internal_date,
        gm_msgid=fetched.gm_msgid,
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=reply_ids[0] if reply_ids else None,
        references=tuple(_message_ids(_decode_8bit(fields.get("references", b"")))),
        subject=_decode_words(
            _unfold(_decode_8bit(fields.get("subject", b""))), defects, "subject"
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
        headers=_scrub(_decode_8bit(raw[:header_end]), defects, "header"),
        defects=_summarise(defects),
    )


def _unreadable(raw: bytes, fetched: _Fetched, error: Exception) -> ParsedMessage:
    """Keep what the FETCH gave, the header text and the Message-ID, and say why."""
    defects = [f"message could not be parsed ({type(error).__name__}): stored with its header only"]

    def header_only() -> tuple[str | None, str]:
        walker = _Walker(raw)
        end, _, _ = walker.read_header(0, ())
        ids = _message_ids(_decode_8bit(walker.fields(0, end, "header").get("message-id", b"")))
        return (ids[0] if ids else None), _scrub(_decode_8bit(raw[:end]), defects, "header")

    message_id, headers = _total(header_only, lambda: (None, ""), defects, "header")
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


_T = TypeVar("_T")


def _total(read: Callable[[], _T], fallback: Callable[[], _T], defects: list[str], what: str) -> _T:
    """Run one reader; any exception it raises becomes a defect naming `what`, and the fallback.

    Hostile input reaches stdlib readers that recurse (RecursionError) or raise
    ValueError, LookupError, IndexError ... where nobody expected it.
    """
    try:
        return read()
    except Exception as exc:  # whatever a reader raises is the input's fault, never fatal
        defects.append(f"{what}: could not be read: {exc!r}")
        return fallback()


def decode_header_value(value: str | bytes | None) -> str:
    """Decode a header value: RFC 2047 encoded words, raw 8-bit bytes, folded lines."""
    if value is None:
        return ""
    text = _decode_8bit(value) if isinstance(value, bytes) else value
    return _decode_words(_unfold(text), [], "header").strip()


def parse_addresses(value: str | bytes | None) -> tuple[Address, ...]:
    """Split an address-list header into addresses with decoded display names."""
    if value is None:
        return ()
    text = _decode_8bit(value) if isinstance(value, bytes) else value
    return _addresses(text)[0]


def normalise_flags(flags: Iterable[str | bytes]) -> frozenset[str]:
    """Return IMAP flags as text; system flags (case-insensitive) in their canonical case."""
    texts = (
        flag.decode("utf-8", errors="replace") if isinstance(flag, bytes) else flag
        for flag in flags
    )
    return frozenset(_SYSTEM_FLAGS.get(text.lower(), text) for text in texts)


def extract_part(raw_part: bytes) -> bytes:
    """Decode one section given as BODY[n.MIME] followed by BODY[n].

    The MIME header says the transfer encoding (base64, quoted-printable, or an
    identity one); the body is returned decoded. A message/rfc822 section comes
    back as the encapsulated message. Bytes that do not open with a header field
    (no MIME header was given) come back as they are.
    """
    if not raw_part.startswith((b"\n", b"\r\n")) and not _FIELD_START.match(raw_part):
        return raw_part
    walker = _Walker(raw_part)
    header_end, body_start, _ = walker.read_header(0, ())
    mime = walker.mime(walker.fields(0, header_end, "part"), "text/plain", "part")
    return _transfer_decode(raw_part[body_start:], mime.transfer_encoding, [], "part")


def part_transfer_encoding(mime_header: bytes) -> str:
    """Return the Content-Transfer-Encoding a BODY[n.MIME] header declares ("7bit" if none)."""
    if not mime_header.startswith((b"\n", b"\r\n")) and not _FIELD_START.match(mime_header):
        return "7bit"
    walker = _Walker(mime_header)
    header_end, _, _ = walker.read_header(0, ())
    return walker.mime(walker.fields(0, header_end, "part"), "text/plain", "part").transfer_encoding


@dataclass(frozen=True, slots=True)
class _Delimiter:
    """A boundary line found in the data."""

    level: int  # index of the matched boundary in the stack, 0 = outermost
    closing: bool  # "--boundary--"
    content_end: int  # end of the preceding content: its last line break belongs here
    next_line: int  # first byte after the delimiter line


@dataclass(frozen=True, slots=True)
class _Place:
    """Where in the tree an entity sits."""

    boundaries: tuple[bytes, ...] = ()  # open multiparts, outermost first
    depth: int = 0
    in_attached: bool = False  # inside a message/rfc822 attachment
    in_related: bool = False  # inside a multipart/related


@dataclass(frozen=True, slots=True)
class _Mime:
    """The MIME header fields of one entity that decide how it is read."""

    content_type: str
    charset: str | None
    boundary: bytes | None
    filename: str | None
    disposition: str | None
    transfer_encoding: str
    content_id: str | None


@dataclass(frozen=True, slots=True)
class _FoundAttachment:
    part_id: str
    mime: _Mime
    filename: str | None
    size: int
    in_related: bool

    def info(self, html: str | None) -> AttachmentInfo:
        """Finish the record once the HTML body is known (cid: references make it inline)."""
        cid = self.mime.content_id
        referenced = cid is not None and (
            self.in_related or (html is not None and f"cid:{cid}" in html)
        )
        return AttachmentInfo(
            part_id=self.part_id,
            filename=self.filename,
            content_type=self.mime.content_type,
            size=self.size,
            content_id=cid,
            inline=self.mime.disposition == "inline" or referenced,
        )


class _Walker:
    """Walk one message's MIME tree on its raw bytes, collecting bodies and attachments."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.defects: list[str] = []
        self.parts = 1  # entities seen, the message itself included
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[_FoundAttachment] = []
        # per boundary: (searched from, start of the next line opening with it, or -1)
        self.found: dict[bytes, tuple[int, int]] = {}

    def read_header(
        self, pos: int, boundaries: tuple[bytes, ...]
    ) -> tuple[int, int, _Delimiter | None]:
        """Find where the header at `pos` ends: a blank line, a delimiter, or the end of data.

        Returns (header end, body start, the delimiter that cut the header short).
        """
        raw = self.raw
        size = len(raw)
        line = pos
        while line < size:
            first = raw[line]
            if first == _LF:
                return line, line + 1, None
            if first == _CR and raw.startswith(b"\n", line + 1):
                return line, line + 2, None
            if first == _DASH and boundaries:
                delimiter = self.delimiter_at(line, pos, boundaries)
                if delimiter is not None:  # the line break before it ends a header line
                    return line, line, replace(delimiter, content_end=line)
            newline = raw.find(b"\n", line)
            if newline < 0:
                break
            line = newline + 1
        return size, size, None

    def delimiter_at(
        self, line: int, start: int, boundaries: tuple[bytes, ...]
    ) -> _Delimiter | None:
        """Match a delimiter line at `line`; the content before it starts at `start`.

        Of the open boundaries that prefix the line the longest wins, the innermost
        on a tie. A delimiter left without its line break by the end of the data
        opens no part: it closes (both as Dovecot does).
        """
        raw = self.raw
        if not raw.startswith(b"--", line) or self.parts >= _MAX_PARTS:
            return None
        level = -1
        for candidate in range(len(boundaries) - 1, -1, -1):
            boundary = boundaries[candidate]
            if raw.startswith(boundary, line + 2) and (
                level < 0 or len(boundary) > len(boundaries[level])
            ):
                level = candidate
        if level < 0:
            return None
        content_end = line
        if line > start:
            content_end -= 1
            if content_end > start and raw[content_end - 1] == _CR:
                content_end -= 1
        newline = raw.find(b"\n", line)
        return _Delimiter(
            level=level,
            closing=newline < 0 or raw.startswith(b"--", line + 2 + len(boundaries[level])),
            content_end=content_end,
            next_line=len(raw) if newline < 0 else newline + 1,
        )

    def next_delimiter(self, pos: int, boundaries: tuple[bytes, ...]) -> _Delimiter | None:
        """Find the first delimiter line at or after the line start `pos`."""
        if not boundaries:
            return None
        line = pos
        while True:
            delimiter = self.delimiter_at(line, pos, boundaries)
            if delimiter is not None:
                return delimiter
            starts = [self.next_line_opening(boundary, line) for boundary in boundaries]
            found = [start for start in starts if start >= 0]
            if not found:
                return None
            line = min(found)

    def next_line_opening(self, boundary: bytes, after: int) -> int:
        """Return the start of the first line after `after` opening with `--boundary`, or -1.

        Searching for the whole boundary skips ahead much faster than stopping at
        every line that starts with "--". Each boundary's last answer is kept:
        walking a multipart asks again from a later offset, so it is still right
        while it lies ahead.
        """
        searched_from, found = self.found.get(boundary, (-1, -1))
        if not searched_from <= after < found and not (found < 0 <= searched_from <= after):
            newline = self.raw.find(b"\n--" + boundary, after)
            found = newline + 1 if newline >= 0 else -1
            self.found[boundary] = (after, found)
        return found

    def fields(self, start: int, end: int, where: str) -> dict[str, bytes]:
        """Return the unfolded header fields in raw[start:end], first occurrence of each name."""
        block = self.raw[start:end]
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                self.defects.append(f"{where}: 8-bit bytes that are not UTF-8 (read as cp1252)")
        fields: dict[str, bytes] = {}
        name = ""
        lines: list[bytes] = []
        for line in block.splitlines():
            if line[:1] in (b" ", b"\t"):
                if name:
                    lines.append(line)
                continue
            if name:
                fields.setdefault(name, b"".join(lines).strip())
            raw_name, colon, value = line.partition(b":")
            name = raw_name.strip().decode("latin-1").lower() if colon else ""
            lines = [value]
            if not name:
                self.defects.append(f"{where}: line without a field name")
        if name:
            fields.setdefault(name, b"".join(lines).strip())
        return fields

    def mime(self, fields: dict[str, bytes], default_type: str, where: str) -> _Mime:
        """Read the Content-* fields that decide how the entity is read."""
        content_type, disposition = fields.get("content-type"), fields.get("content-disposition")
        type_text = None if content_type is None else _decode_8bit(content_type)
        boundary = None
        if type_text is not None and "oundary" in type_text:
            type_text, boundary = _without_boundary(type_text)
        header_values = (
            _cut_parameters(type_text, self.defects, where),
            None
            if disposition is None
            else _cut_parameters(_decode_8bit(disposition), self.defects, where),
        )
        short = sum(len(value or "") for value in header_values) <= _CACHEABLE
        read = _content_headers if short else _content_headers.__wrapped__
        mime, found = _total(
            lambda: read(*header_values, default_type),
            lambda: (_plain_mime(default_type), ()),
            self.defects,
            f"{where} Content-Type/Content-Disposition (read as {default_type})",
        )
        self.defects.extend(f"{where} {defect}" for defect in found)
        encoding, content_id = fields.get("content-transfer-encoding"), fields.get("content-id")
        if encoding is not None:
            tokens = _decode_8bit(encoding).split()
            mime = _with_encoding(mime, tokens[0].lower() if tokens else "7bit")
        if boundary is None and content_id is None:
            return mime
        cid = None if content_id is None else _decode_8bit(content_id).strip().strip("<>").strip()
        return replace(
            mime,
            boundary=mime.boundary if boundary is None else boundary.encode() or None,
            content_id=cid or None,
        )

    def entity(
        self, pos: int, number: str, place: _Place, *, is_message: bool, default_type: str
    ) -> tuple[dict[str, bytes], _Delimiter | None]:
        """Read the entity (header and body) at `pos`; return its fields and the next delimiter."""
        self.parts += 1
        header_end, body_start, cut = self.read_header(pos, place.boundaries)
        where = f"part {number}" if number else "header"
        fields = self.fields(pos, header_end, where)
        return fields, self.body(
            fields,
            body_start,
            number,
            place,
            is_message=is_message,
            cut=cut,
            default_type=default_type,
        )

    def body(
        self,
        fields: dict[str, bytes],
        start: int,
        number: str,
        place: _Place,
        *,
        is_message: bool,
        cut: _Delimiter | None,
        default_type: str = "text/plain",
    ) -> _Delimiter | None:
        """Read the body at `start` of the entity numbered `number`; return the delimiter after it.

        The body of a message (top-level or encapsulated) that is not multipart is
        the message's part 1; a multipart's children are numbered under `number`.
        """
        part_id = _join(number, "1") if is_message else number
        where = f"part {part_id}"
        mime = self.mime(fields, default_type, where)
        is_multipart = mime.content_type.startswith("multipart/")
        if cut is None and (is_multipart or mime.content_type == "message/rfc822"):
            if place.depth < _MAX_DEPTH and is_multipart:
                return self.multipart(start, number, mime, place)
            if place.depth < _MAX_DEPTH:
                return self.attached_message(start, part_id, mime, place)
            self.defects.append(f"{where}: nested too deep, kept as an opaque part")
            mime = replace(mime, content_type="application/octet-stream")
            is_multipart = False
        after = cut or self.next_delimiter(start, place.boundaries)
        if is_multipart:
            self.defects.append(f"{where}: multipart cut short by a boundary in its header")
        else:
            self.leaf(
                start, len(self.raw) if after is None else after.content_end, part_id, mime, place
            )
        return after

    def multipart(self, start: int, number: str, mime: _Mime, place: _Place) -> _Delimiter | None:
        """Read the children of a multipart body (RFC 2046 section 5.1)."""
        where = f"part {number}" if number else "message body"
        if mime.boundary is None:
            self.defects.append(f"{where}: multipart without a boundary")
            after = self.next_delimiter(start, place.boundaries)
            self.fallback_text(start, after, mime, where)
            return after
        level = len(place.boundaries)
        inner = _Place(
            boundaries=(*place.boundaries, mime.boundary),
            depth=place.depth + 1,
            in_attached=place.in_attached,
            in_related=place.in_related or mime.content_type == "multipart/related",
        )
        default_type = "message/rfc822" if mime.content_type == "multipart/digest" else "text/plain"
        delimiter = self.next_delimiter(start, inner.boundaries)
        count = 0
        while delimiter is not None and delimiter.level == level and not delimiter.closing:
            count += 1
            _, delimiter = self.entity(
                delimiter.next_line,
                _join(number, str(count)),
                inner,
                is_message=False,
                default_type=default_type,
            )
        if count == 0:
            self.defects.append(f"{where}: no parts found for boundary {mime.boundary!r}")
            self.fallback_text(start, delimiter, mime, where)
        if delimiter is None:
            if count:
                self.defects.append(f"{where}: multipart not closed (truncated?)")
            return None
        if delimiter.level == level:
            return self.next_delimiter(delimiter.next_line, place.boundaries)
        self.defects.append(f"{where}: multipart not closed before its parent's boundary")
        return delimiter

    def attached_message(
        self, start: int, part_id: str, mime: _Mime, place: _Place
    ) -> _Delimiter | None:
        """Record a message/rfc822 part as an attachment and walk its parts under its number."""
        if mime.transfer_encoding not in ("7bit", "8bit", "binary"):
            self.defects.append(
                f"part {part_id}: message/rfc822 in {mime.transfer_encoding} (read as is)"
            )
        index = len(self.attachments)
        inner = _Place(place.boundaries, place.depth + 1, in_attached=True, in_related=False)
        fields, after = self.entity(
            start, part_id, inner, is_message=True, default_type="text/plain"
        )
        end = len(self.raw) if after is None else after.content_end
        subject = _decode_words(
            _unfold(_decode_8bit(fields.get("subject", b""))), self.defects, f"part {part_id}"
        )
        filename = mime.filename or f"{_safe_filename(subject) or 'message'}.eml"
        size = self.decoded_size(start, end, mime.transfer_encoding, f"part {part_id}")
        found = _FoundAttachment(part_id, mime, filename, size, place.in_related)
        self.attachments.insert(index, found)
        return after

    def leaf(self, start: int, end: int, part_id: str, mime: _Mime, place: _Place) -> None:
        """Take a single part as the text or HTML body, or record it as an attachment.

        Only the first plain and the first HTML body are bodies; a later one (a
        footer, a fragment between inline images) stays reachable as an attachment.
        """
        is_body = (
            mime.content_type in ("text/plain", "text/html")
            and mime.disposition != "attachment"
            and mime.filename is None
        )
        if is_body and place.in_attached:
            return  # the forwarded message's own body, inside its .eml
        where = f"part {part_id}"
        if is_body and mime.content_type == "text/plain" and self.text is None:
            self.text = self.decode_text(start, end, mime, where)
            return
        if is_body and mime.content_type == "text/html" and self.html is None:
            self.html = self.decode_text(start, end, mime, where)
            return
        size = self.decoded_size(start, end, mime.transfer_encoding, where)
        self.attachments.append(
            _FoundAttachment(part_id, mime, mime.filename, size, place.in_related)
        )

    def fallback_text(self, start: int, after: _Delimiter | None, mime: _Mime, where: str) -> None:
        """Keep the undivided body of a broken multipart as plain text, so nothing is lost."""
        if self.text is None:
            end = len(self.raw) if after is None else after.content_end
            self.text = self.decode_text(start, end, mime, where)

    def decode_text(self, start: int, end: int, mime: _Mime, where: str) -> str:
        data = _transfer_decode(self.raw[start:end], mime.transfer_encoding, self.defects, where)
        return _scrub(_decode_bytes(data, mime.charset, self.defects, where), self.defects, where)

    def decoded_size(self, start: int, end: int, encoding: str, where: str) -> int:
        """Return the decoded size of raw[start:end], without decoding clean base64."""
        if encoding == "base64":
            size = _base64_size(self.raw, start, end)
            if size is not None:
                return size
        if encoding in ("base64", "quoted-printable"):
            return len(_transfer_decode(self.raw[start:end], encoding, self.defects, where))
        return end - start


def _summarise(defects: list[str]) -> tuple[str, ...]:
    """Drop repeated defects and keep at most _MAX_DEFECTS, so a hostile message stays small."""
    if not defects:
        return ()
    unique = list(dict.fromkeys(defect[:_MAX_DEFECT_LENGTH] for defect in defects))
    if len(unique) <= _MAX_DEFECTS:
        return tuple(unique)
    hidden = len(unique) - _MAX_DEFECTS + 1
    return (*unique[: _MAX_DEFECTS - 1], f"... and {hidden} more problems")


def _join(number: str, child: str) -> str:
    return f"{number}.{child}" if number else child


def _base64_size(data: bytes, start: int = 0, end: int | None = None) -> int | None:
    """Count the bytes clean base64 in data[start:end] decodes to; None when it is not clean.

    Works through the data a megabyte at a time, so a large attachment is never
    copied whole, let alone decoded.
    """
    end = len(data) if end is None else end
    rest = b"".join(  # whitespace, padding, anything invalid
        data[chunk : min(chunk + _CHUNK, end)].translate(None, _BASE64_ALPHABET)
        for chunk in range(start, end, _CHUNK)
    )
    padding = rest.count(b"=")
    if rest.translate(None, _WHITESPACE + b"=") or padding > 2:
        return None
    chars = end - start - len(rest)
    if (chars + padding) % 4:
        return None
    if padding and data[data.find(b"=", start, end) : end].translate(None, _WHITESPACE + b"="):
        return None  # padding in the middle
    return (chars + padding) // 4 * 3 - padding


def _decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Decode base64 leniently; the flag says whether the input was clean."""
    clean = _base64_size(data) is not None
    try:
        return binascii.a2b_base64(data), clean
    except binascii.Error:  # a dangling character or missing padding
        chars = _NOT_BASE64.sub(b"", data)
        chars = chars[: len(chars) - 1] if len(chars) % 4 == 1 else chars
        return binascii.a2b_base64(chars + b"=" * (-len(chars) % 4)), False


def _transfer_decode(data: bytes, encoding: str, defects: list[str], where: str) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 section 6)."""
    if encoding == "base64":
        decoded, clean = _decode_base64(data)
        if not clean:
            defects.append(f"{where}: invalid base64")
        return decoded
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding not in ("7bit", "8bit", "binary"):
        defects.append(f"{where}: unknown transfer encoding {encoding!r} (kept as is)")
    return data


@lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    """Return the Python codec for a MIME charset label, None when unknown or not text."""
    label = charset.strip().strip("\"'").lower()
    try:
        name = codecs.lookup(_CHARSET_ALIASES.get(label, label)).name
    except (LookupError, ValueError):
        return None
    try:
        b"a".decode(name)
    except UnicodeError:
        pass  # a text codec that needs more than one byte
    except Exception:  # bytes-to-bytes (LookupError), like "base64", or a broken codec
        return None
    return None if name in _REFUSED_CODECS else name


def _decode_bytes(data: bytes, charset: str | None, defects: list[str], where: str) -> str:
    """Decode text in its declared charset, falling back to UTF-8, then cp1252 with replacement."""
    codec = _codec(charset or "us-ascii")
    if codec is None:
        defects.append(f"{where}: unknown charset {charset!r}")
    else:
        try:
            return data.decode(codec)
        except Exception:  # UnicodeError, or whatever an odd codec raises on odd bytes
            if charset:
                defects.append(f"{where}: text is not valid {charset}")
            else:
                defects.append(f"{where}: 8-bit text without a charset")
    if codec != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return data.decode("cp1252", errors="replace")


def _decode_8bit(value: bytes) -> str:
    """Read raw header bytes: ASCII, else UTF-8 (RFC 6532), else cp1252."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", errors="replace")


def _unfold(text: str) -> str:
    """Undo header folding (RFC 5322 section 2.2.3): drop line breaks, keep the whitespace."""
    return text.replace("\r", "").replace("\n", "") if "\n" in text or "\r" in text else text


def _decode_words(text: str, defects: list[str], where: str) -> str:
    """Decode RFC 2047 encoded words (section 6.2: whitespace between two of them goes).

    Adjacent words in one charset are joined before decoding, so a character
    split across two words survives.
    """
    if "=?" not in text:
        return _scrub(text, defects, where)
    pieces: list[str] = []
    pending: list[bytes] = []  # decoded payloads of the current run of adjacent words
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        charset, encoding, payload = match[1].lower(), match[2].lower(), match[3]
        adjacent = pending_charset is not None and (not gap or gap.isspace())
        if pending_charset is not None and (not adjacent or charset != pending_charset):
            pieces.append(_decode_bytes(b"".join(pending), pending_charset, defects, where))
            pending = []
        if not adjacent:
            pieces.append(gap)
        if encoding == "b":
            data, clean = _decode_base64(payload.encode("utf-8", "surrogatepass"))
            if not clean:
                defects.append(f"{where}: invalid base64 in an encoded word")
        else:
            data = binascii.a2b_qp(payload.encode("utf-8", "surrogatepass"), header=True)
        pending.append(data)
        pending_charset = charset
        position = match.end()
    if pending_charset is not None:
        pieces.append(_decode_bytes(b"".join(pending), pending_charset, defects, where))
    pieces.append(text[position:])
    return _scrub("".join(pieces), defects, where)


def _scrub(text: str, defects: list[str], where: str) -> str:
    """Remove what no database text column (nor JSON) accepts: NUL characters and lone
    surrogates, which UTF-7 or an RFC 2231 value can decode to."""
    if "\x00" in text:
        defects.append(f"{where}: NUL characters removed")
        text = text.replace("\x00", "")
    if not text.isascii() and _SURROGATE.search(text):
        defects.append(f"{where}: lone surrogates replaced")
        text = _SURROGATE.sub("\ufffd", text)
    return text


@lru_cache(maxsize=1024)
def _content_headers(
    content_type: str | None, disposition: str | None, default_type: str
) -> tuple[_Mime, tuple[str, ...]]:
    """Read Content-Type and Content-Disposition with the stdlib (RFC 2045, RFC 2231).

    Pure, so cached: the headers of text parts repeat from message to message.
    Returns the reading and its defects.
    """
    header = Message()
    header.set_default_type(default_type)
    if content_type is not None:
        header["content-type"] = content_type
    if disposition is not None:
        header["content-disposition"] = disposition
    defects: list[str] = []
    type_params = _params(header, "content-type")
    charset = _param_text(type_params.get("charset"), defects)
    boundary = type_params.get("boundary")
    filename = _param_text(
        _params(header, "content-disposition").get("filename") or type_params.get("name"),
        defects,
    )
    mime = _Mime(
        content_type=header.get_content_type(),
        charset=charset.lower() if charset and charset.isascii() else None,
        boundary=boundary.encode() if isinstance(boundary, str) and boundary else None,
        filename=(_decode_words(filename, defects, "filename") or None) if filename else None,
        disposition=header.get_content_disposition(),
        transfer_encoding="7bit",
        content_id=None,
    )
    return mime, tuple(defects)


def _cut_parameters(value: str | None, defects: list[str], where: str) -> str | None:
    """Keep a Content-Type/-Disposition value within _MAX_CONTENT_FIELD_CHARS, whole
    parameters only."""
    if value is None or len(value) <= _MAX_CONTENT_FIELD_CHARS:
        return value
    defects.append(f"{where}: Content-* field cut at {_MAX_CONTENT_FIELD_CHARS} characters")
    cut = value.rfind(";", 0, _MAX_CONTENT_FIELD_CHARS)
    return value[: cut if cut > 0 else _MAX_CONTENT_FIELD_CHARS]


def _plain_mime(content_type: str) -> _Mime:
    """Return the reading of an entity without Content-* fields (RFC 2045 defaults)."""
    return _Mime(content_type, None, None, None, None, "7bit", None)


def _without_boundary(content_type: str) -> tuple[str, str | None]:
    """Take a plain `boundary` parameter out of a Content-Type, so the rest can be cached.

    Boundaries are unique per message; without them the Content-Type of a
    multipart repeats like any other. Returns the value unchanged (and None)
    unless the stdlib would read the same boundary: one `boundary` parameter, a
    token or a quoted string without escapes, after balanced quotes.
    """
    match = _BOUNDARY_PARAM.search(content_type)
    if match is None:
        return content_type, None
    before, after = content_type[: match.start()], content_type[match.end() :]
    rest = before + after
    if before.count('"') % 2 or "\\" in before or "boundary" in rest.lower():
        return content_type, None
    quoted, token = match.group(1, 2)
    return rest, quoted if quoted is not None else token


@lru_cache(maxsize=256)
def _with_encoding(mime: _Mime, transfer_encoding: str) -> _Mime:
    """Return `mime` read with its Content-Transfer-Encoding; cached, as readings repeat."""
    return replace(mime, transfer_encoding=transfer_encoding)


def _params(header: Message, name: str) -> dict[str, str | tuple[str | None, str | None, str]]:
    """Return the parameters of one header by lower-case name; the first of a name wins."""
    return {key.lower(): value for key, value in reversed(header.get_params([], header=name))}


def _param_text(
    value: str | tuple[str | None, str | None, str] | None, defects: list[str]
) -> str | None:
    """Flatten an RFC 2231 (charset, language, text) parameter to text.

    A charset the codec registry refuses to look up (one holding a NUL raises
    ValueError, not LookupError) leaves the percent-decoded octets as Latin-1.
    """
    if not value:
        return None
    text = _total(
        lambda: collapse_rfc2231_value(value),
        lambda: value if isinstance(value, str) else value[2],
        defects,
        "RFC 2231 parameter",
    )
    return _scrub(text, defects, "RFC 2231 parameter").strip()


@lru_cache(maxsize=1024)
def _address_list(text: str) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    """Parse an address list first, then decode the names (a decoded name may hold commas).

    Pure, so cached: correspondents repeat. Returns the addresses and the defects.
    """
    defects: list[str] = []
    text = _unfold(_scrub(text, defects, "address"))
    if text.count("(") > _MAX_COMMENT_DEPTH and _comment_depth(text) > _MAX_COMMENT_DEPTH:
        defects.append("address: comments nested too deep, parentheses dropped")
        text = text.replace("(", "").replace(")", "")
    addresses = _total(
        lambda: tuple(
            Address(name=_decode_words(name, defects, "display name").strip(), email=email)
            for name, email in getaddresses([text])
            if email
        ),
        lambda: tuple(Address("", word) for word in _ADDRESS_SEPARATORS.split(text) if "@" in word),
        defects,
        "address list (addresses taken from its words)",
    )
    if len(addresses) > _MAX_ADDRESSES:
        defects.append(
            f"address: {len(addresses) - _MAX_ADDRESSES} addresses over the limit dropped"
        )
        addresses = addresses[:_MAX_ADDRESSES]
    return addresses, tuple(defects)


def _comment_depth(text: str) -> int:
    """Return how deep parentheses nest (the stdlib address parser recurses once per level)."""
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(depth - 1, 0)
    return deepest


def _addresses(text: str) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    if len(text) <= _CACHEABLE:
        return _address_list(text)
    if len(text) <= _MAX_ADDRESS_LIST_CHARS:
        return _address_list.__wrapped__(text)
    cut = text.rfind(",", 0, _MAX_ADDRESS_LIST_CHARS)
    addresses, defects = _address_list.__wrapped__(
        text[: cut if cut > 0 else _MAX_ADDRESS_LIST_CHARS]
    )
    return addresses, (*defects, f"address: list cut at {_MAX_ADDRESS_LIST_CHARS} characters")


def _parse_date(text: str, defects: list[str]) -> datetime | None:
    """Parse an RFC 5322 date; no zone (or -0000) means UTC."""

    def read() -> datetime | None:
        parts = parsedate_tz(_unfold(text))
        if parts is None:
            return None
        zone = timezone(timedelta(seconds=parts[9] or 0))
        year, month, day, hour, minute, second = parts[:6]
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)

    moment = _total(read, lambda: None, [], "date")
    if moment is None or not _storable(moment):
        defects.append(f"unparseable Date header {text[:80]!r}")
        return None
    return moment


def _storable(moment: datetime) -> bool:
    """Say whether `moment` survives the database in any session time zone."""
    try:
        return _MIN_YEAR <= moment.astimezone(UTC).year <= _MAX_YEAR
    except (ValueError, OverflowError):  # beyond datetime's range once in UTC
        return False


def _message_ids(text: str) -> list[str]:
    """Return the <id> tokens of a Message-ID, In-Reply-To or References value, in order."""
    ids = ["".join(inner.split()) for inner in _BRACKETED_ID.findall(text)]
    if not ids:  # bare ids, as some broken mailers write them
        ids = [token for token in text.replace(",", " ").split() if "@" in token]
    return [f"<{token}>" for token in ids if token]


def _safe_filename(text: str) -> str:
    return _UNSAFE_FILENAME.sub("_", text).strip(" ._")[:200]


def _aware(moment: datetime | None) -> datetime | None:
    """Make an INTERNALDATE aware; one the database could not hold back is dropped."""
    if moment is None:
        return None
    try:
        aware = moment if moment.tzinfo is not None else moment.astimezone()
    except (ValueError, OverflowError):  # year 1 in a zone east of UTC
        return None
    return aware if _storable(aware) else None
