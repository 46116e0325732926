"""How one MIME entity is to be read: its Content-Type, -Disposition, -Transfer-Encoding, -ID.

Content-Type and Content-Disposition go through the stdlib (RFC 2045, RFC 2231)
and are cached per process, since the headers of text parts repeat from message
to message; a multipart's boundary, unique to its message, is taken out first
so the rest still repeats. The stdlib's parameter parser slows down faster
than its input grows (1 MB of ";" took 34 s), so it sees at most 16 kB of a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from email.message import Message
from email.utils import collapse_rfc2231_value
from functools import lru_cache

from app.imap.headers import CACHEABLE_CHARS
from app.imap.text_decoding import decode_8bit, decode_words, read_or_fall_back, scrub

# The stdlib's parameter parser slows down faster than its input grows: 1 MB of ";" in a
# Content-Type took 34 s. Filenames, the longest real parameters, are a few hundred
# characters (the boundary is read apart).
_MAX_CONTENT_FIELD_CHARS = 16 * 1024
_BOUNDARY_PARAM = re.compile(
    r';[ \t]*boundary[ \t]*=[ \t]*(?:"([^"\\]*)"|([^\s;"\\()<>@,:/\[\]?=]+))[ \t]*(?=;|\Z)',
    re.IGNORECASE,
)
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


@dataclass(frozen=True, slots=True)
class Mime:
    """The MIME header fields of one entity that decide how it is read."""

    content_type: str
    charset: str | None
    boundary: bytes | None
    filename: str | None
    disposition: str | None
    transfer_encoding: str
    content_id: str | None


def read_mime(fields: dict[str, bytes], default_type: str, where: str, defects: list[str]) -> Mime:
    """Read the Content-* fields that decide how the entity is read; problems join `defects`."""
    content_type, disposition = fields.get("content-type"), fields.get("content-disposition")
    type_text = None if content_type is None else decode_8bit(content_type)
    boundary = None
    if type_text is not None and "oundary" in type_text:
        type_text, boundary = _without_boundary(type_text)
    header_values = (
        _cut_parameters(type_text, defects, where),
        None if disposition is None else _cut_parameters(decode_8bit(disposition), defects, where),
    )
    short = sum(len(value or "") for value in header_values) <= CACHEABLE_CHARS
    read = _content_headers if short else _content_headers.__wrapped__
    mime, found = read_or_fall_back(
        lambda: read(*header_values, default_type),
        lambda: (_plain_mime(default_type), ()),
        defects,
        f"{where} Content-Type/Content-Disposition (read as {default_type})",
    )
    defects.extend(f"{where} {defect}" for defect in found)
    encoding, content_id = fields.get("content-transfer-encoding"), fields.get("content-id")
    if encoding is not None:
        tokens = decode_8bit(encoding).split()
        mime = _with_encoding(mime, tokens[0].lower() if tokens else "7bit")
    if boundary is None and content_id is None:
        return mime
    cid = None if content_id is None else decode_8bit(content_id).strip().strip("<>").strip()
    return replace(
        mime,
        boundary=mime.boundary if boundary is None else boundary.encode() or None,
        content_id=cid or None,
    )


@lru_cache(maxsize=1024)
def _content_headers(
    content_type: str | None, disposition: str | None, default_type: str
) -> tuple[Mime, tuple[str, ...]]:
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
    mime = Mime(
        content_type=header.get_content_type(),
        charset=charset.lower() if charset and charset.isascii() else None,
        boundary=boundary.encode() if isinstance(boundary, str) and boundary else None,
        filename=(decode_words(filename, defects, "filename") or None) if filename else None,
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


def _plain_mime(content_type: str) -> Mime:
    """Return the reading of an entity without Content-* fields (RFC 2045 defaults)."""
    return Mime(content_type, None, None, None, None, "7bit", None)


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
def _with_encoding(mime: Mime, transfer_encoding: str) -> Mime:
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
    text = read_or_fall_back(
        lambda: collapse_rfc2231_value(value),
        lambda: value if isinstance(value, str) else value[2],
        defects,
        "RFC 2231 parameter",
    )
    return scrub(text, defects, "RFC 2231 parameter").strip()


def safe_filename(text: str) -> str:
    return _UNSAFE_FILENAME.sub("_", text).strip(" ._")[:200]
