"""Undo a Content-Transfer-Encoding (RFC 2045 section 6) chunk by chunk.

A streamed attachment arrives in partial FETCHes whose boundaries fall
anywhere: inside a base64 quantum, inside a quoted-printable `=XX` escape or
soft line break. The decoder keeps only the few bytes that cannot be decoded
yet, so memory stays at one chunk whatever the size of the part::

    feed(chunk) -> decoded bytes (the undecodable tail is kept)
    finish()    -> the rest (a dangling base64 character is dropped, as
                   `app.imap.text_decoding` drops it when decoding a whole part)
"""

from __future__ import annotations

import binascii
import re

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_IDENTITY = ("7bit", "8bit", "binary")


class TransferDecoder:
    """Decode base64 and quoted-printable incrementally; other encodings pass through."""

    def __init__(self, encoding: str) -> None:
        self.encoding = (
            encoding.lower() if encoding.lower() in ("base64", "quoted-printable") else ""
        )
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """Return what `data` (after what was kept before) decodes to so far."""
        if self.encoding == "base64":
            chars = self._pending + _NOT_BASE64.sub(b"", data)
            ready = len(chars) - len(chars) % 4
            self._pending = chars[ready:]
            return binascii.a2b_base64(chars[:ready])
        if self.encoding == "quoted-printable":
            text = self._pending + data
            ready = _qp_ready(text)
            self._pending = text[ready:]
            return binascii.a2b_qp(text[:ready])
        return data

    def finish(self) -> bytes:
        """Return the decoded rest once the part has ended."""
        rest, self._pending = self._pending, b""
        if self.encoding == "base64":
            rest = rest[: len(rest) - 1] if len(rest) % 4 == 1 else rest
            return binascii.a2b_base64(rest + b"=" * (-len(rest) % 4)) if rest else b""
        if self.encoding == "quoted-printable":
            return binascii.a2b_qp(rest)
        return rest


def _qp_ready(text: bytes) -> int:
    """Return how much of `text` decodes the same whatever follows it.

    Up to the last line break; on a line without one (a hostile part need not
    break its lines), all but an escape or soft break that may be cut short.
    """
    newline = text.rfind(b"\n")
    if newline >= 0:
        return newline + 1
    escape = text.rfind(b"=", max(len(text) - 2, 0))
    return escape if escape >= 0 else len(text)
