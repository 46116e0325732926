"""Walk a message's MIME tree on its raw bytes: the text and HTML bodies, the attachments.

The tree is walked by offsets, the way Dovecot's message parser walks it,
instead of through ``email.message``: the stdlib parser splits every line into
Python strings (about 1,300 typical messages/s on one core) and disagrees with
IMAP servers on broken boundaries. Part numbers follow RFC 3501 section
6.4.5, so ``AttachmentInfo.part_id`` can be fetched later as ``BODY[part_id]``::

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
numbers its body's parts under its own number ("3.1", ...). As in Dovecot, an
unclosed multipart ends at the next delimiter of an enclosing one or at the
end of the data; boundaries given only in RFC 2231 form (``boundary*=``) are
not boundaries; the 100th nested multipart or message is an opaque
application/octet-stream part. The lines themselves are found by
app.imap.mime_scan.

Attachment sizes are exact without decoding base64 (counted from the encoded
length and padding, a megabyte at a time); quoted-printable parts and broken
base64 are decoded once to be measured, then dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.imap.mime_headers import Mime, read_mime, safe_filename
from app.imap.mime_scan import Delimiter, MimeScanner
from app.imap.text_decoding import (
    base64_size,
    decode_8bit,
    decode_bytes,
    decode_words,
    scrub,
    transfer_decode,
    unfold,
)

# The 100th nested multipart or message (the root is the first) is an opaque
# application/octet-stream part, as in Dovecot's message parser.
_MAX_DEPTH = 99


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """A part attached to a message, to be fetched later as ``BODY[part_id]``."""

    part_id: str  # IMAP section number for BODY[part_id] (RFC 3501 section 6.4.5)
    filename: str | None  # decoded (RFC 2047 and RFC 2231)
    content_type: str  # lower-case "type/subtype"
    size: int  # decoded byte size
    content_id: str | None  # without angle brackets
    inline: bool  # Content-Disposition inline, or referenced through its Content-ID


@dataclass(frozen=True, slots=True)
class Place:
    """Where in the tree an entity sits."""

    boundaries: tuple[bytes, ...] = ()  # open multiparts, outermost first
    depth: int = 0
    in_attached: bool = False  # inside a message/rfc822 attachment
    in_related: bool = False  # inside a multipart/related


@dataclass(frozen=True, slots=True)
class _FoundAttachment:
    part_id: str
    mime: Mime
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


class MimeWalker(MimeScanner):
    """Walk one message's MIME tree on its raw bytes, collecting bodies and attachments."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[_FoundAttachment] = []

    def entity(
        self, pos: int, number: str, place: Place, *, is_message: bool, default_type: str
    ) -> tuple[dict[str, bytes], Delimiter | None]:
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
        place: Place,
        *,
        is_message: bool,
        cut: Delimiter | None,
        default_type: str = "text/plain",
    ) -> Delimiter | None:
        """Read the body at `start` of the entity numbered `number`; return the delimiter after it.

        The body of a message (top-level or encapsulated) that is not multipart is
        the message's part 1; a multipart's children are numbered under `number`.
        """
        part_id = _join(number, "1") if is_message else number
        where = f"part {part_id}"
        mime = read_mime(fields, default_type, where, self.defects)
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

    def multipart(self, start: int, number: str, mime: Mime, place: Place) -> Delimiter | None:
        """Read the children of a multipart body (RFC 2046 section 5.1)."""
        where = f"part {number}" if number else "message body"
        if mime.boundary is None:
            self.defects.append(f"{where}: multipart without a boundary")
            after = self.next_delimiter(start, place.boundaries)
            self.fallback_text(start, after, mime, where)
            return after
        level = len(place.boundaries)
        inner = Place(
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
        self, start: int, part_id: str, mime: Mime, place: Place
    ) -> Delimiter | None:
        """Record a message/rfc822 part as an attachment and walk its parts under its number."""
        if mime.transfer_encoding not in ("7bit", "8bit", "binary"):
            self.defects.append(
                f"part {part_id}: message/rfc822 in {mime.transfer_encoding} (read as is)"
            )
        index = len(self.attachments)
        inner = Place(place.boundaries, place.depth + 1, in_attached=True, in_related=False)
        fields, after = self.entity(
            start, part_id, inner, is_message=True, default_type="text/plain"
        )
        end = len(self.raw) if after is None else after.content_end
        subject = decode_words(
            unfold(decode_8bit(fields.get("subject", b""))), self.defects, f"part {part_id}"
        )
        filename = mime.filename or f"{safe_filename(subject) or 'message'}.eml"
        size = self.decoded_size(start, end, mime.transfer_encoding, f"part {part_id}")
        found = _FoundAttachment(part_id, mime, filename, size, place.in_related)
        self.attachments.insert(index, found)
        return after

    def leaf(self, start: int, end: int, part_id: str, mime: Mime, place: Place) -> None:
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

    def fallback_text(self, start: int, after: Delimiter | None, mime: Mime, where: str) -> None:
        """Keep the undivided body of a broken multipart as plain text, so nothing is lost."""
        if self.text is None:
            end = len(self.raw) if after is None else after.content_end
            self.text = self.decode_text(start, end, mime, where)

    def decode_text(self, start: int, end: int, mime: Mime, where: str) -> str:
        data = transfer_decode(self.raw[start:end], mime.transfer_encoding, self.defects, where)
        return scrub(decode_bytes(data, mime.charset, self.defects, where), self.defects, where)

    def decoded_size(self, start: int, end: int, encoding: str, where: str) -> int:
        """Return the decoded size of raw[start:end], without decoding clean base64."""
        if encoding == "base64":
            size = base64_size(self.raw, start, end)
            if size is not None:
                return size
        if encoding in ("base64", "quoted-printable"):
            return len(transfer_decode(self.raw[start:end], encoding, self.defects, where))
        return end - start


def _join(number: str, child: str) -> str:
    return f"{number}.{child}" if number else child
