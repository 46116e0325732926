"""Mail's bytes as text: charsets, RFC 2047 encoded words, base64 and quoted-printable.

Every reader here is lenient and records what it had to repair as a defect
(a line of `ParsedMessage.defects`) instead of raising: an unknown charset
falls back to UTF-8, then cp1252; broken base64 decodes as far as it goes;
NUL characters and lone surrogates (UTF-7 decodes to them), which no database
text column takes, are removed. `read_or_fall_back` runs a stdlib reader that
may raise anything on hostile input and turns the failure into a defect.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

_CHUNK = 1 << 20
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n"
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")
_ENCODED_WORD = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?]*)\?=")
_SURROGATE = re.compile("[\ud800-\udfff]")
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


_T = TypeVar("_T")


def read_or_fall_back(
    read: Callable[[], _T], fallback: Callable[[], _T], defects: list[str], what: str
) -> _T:
    """Run one reader; any exception it raises becomes a defect naming `what`, and the fallback.

    Hostile input reaches stdlib readers that recurse (RecursionError) or raise
    ValueError, LookupError, IndexError ... where nobody expected it.
    """
    try:
        return read()
    except Exception as exc:  # whatever a reader raises is the input's fault, never fatal
        defects.append(f"{what}: could not be read: {exc!r}")
        return fallback()


def base64_size(data: bytes, start: int = 0, end: int | None = None) -> int | None:
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


def decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Decode base64 leniently; the flag says whether the input was clean."""
    clean = base64_size(data) is not None
    try:
        return binascii.a2b_base64(data), clean
    except binascii.Error:  # a dangling character or missing padding
        chars = _NOT_BASE64.sub(b"", data)
        chars = chars[: len(chars) - 1] if len(chars) % 4 == 1 else chars
        return binascii.a2b_base64(chars + b"=" * (-len(chars) % 4)), False


def transfer_decode(data: bytes, encoding: str, defects: list[str], where: str) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 section 6)."""
    if encoding == "base64":
        decoded, clean = decode_base64(data)
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


def decode_bytes(data: bytes, charset: str | None, defects: list[str], where: str) -> str:
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


def decode_8bit(value: bytes) -> str:
    """Read raw header bytes: ASCII, else UTF-8 (RFC 6532), else cp1252."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", errors="replace")


def unfold(text: str) -> str:
    """Undo header folding (RFC 5322 section 2.2.3): drop line breaks, keep the whitespace."""
    return text.replace("\r", "").replace("\n", "") if "\n" in text or "\r" in text else text


def decode_words(text: str, defects: list[str], where: str) -> str:
    """Decode RFC 2047 encoded words (section 6.2: whitespace between two of them goes).

    Adjacent words in one charset are joined before decoding, so a character
    split across two words survives.
    """
    if "=?" not in text:
        return scrub(text, defects, where)
    pieces: list[str] = []
    pending: list[bytes] = []  # decoded payloads of the current run of adjacent words
    pending_charset: str | None = None
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        charset, encoding, payload = match[1].lower(), match[2].lower(), match[3]
        adjacent = pending_charset is not None and (not gap or gap.isspace())
        if pending_charset is not None and (not adjacent or charset != pending_charset):
            pieces.append(decode_bytes(b"".join(pending), pending_charset, defects, where))
            pending = []
        if not adjacent:
            pieces.append(gap)
        if encoding == "b":
            data, clean = decode_base64(payload.encode("utf-8", "surrogatepass"))
            if not clean:
                defects.append(f"{where}: invalid base64 in an encoded word")
        else:
            data = binascii.a2b_qp(payload.encode("utf-8", "surrogatepass"), header=True)
        pending.append(data)
        pending_charset = charset
        position = match.end()
    if pending_charset is not None:
        pieces.append(decode_bytes(b"".join(pending), pending_charset, defects, where))
    pieces.append(text[position:])
    return scrub("".join(pieces), defects, where)


def scrub(text: str, defects: list[str], where: str) -> str:
    """Remove what no database text column (nor JSON) accepts: NUL characters and lone
    surrogates, which UTF-7 or an RFC 2231 value can decode to."""
    if "\x00" in text:
        defects.append(f"{where}: NUL characters removed")
        text = text.replace("\x00", "")
    if not text.isascii() and _SURROGATE.search(text):
        defects.append(f"{where}: lone surrogates replaced")
        text = _SURROGATE.sub("\ufffd", text)
    return text
