"""Find a MIME entity's header, its fields and the boundary lines that end it, on raw bytes.

The rules are Dovecot 2.3's (checked against its BODYSTRUCTURE and BODY[n] on
thousands of generated and broken messages): a line starting with
``--boundary`` is a delimiter whatever follows it; of the open boundaries that
prefix a line the longest wins, the innermost on a tie; a delimiter may end a
part while its header is still being read; a delimiter cut off by the end of
the data closes; after 10,000 parts no boundary counts. A part's end is found
by searching for its boundary, not by stopping at every line that starts with
"--". The tree built on these lines is app.imap.mime_walk's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from app.imap.mime_headers import read_mime

# Dovecot's message parser recognises no more boundaries after 10,000 parts.
_MAX_PARTS = 10_000
_LF, _CR, _DASH = 0x0A, 0x0D, 0x2D
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")  # a header field name and its colon


@dataclass(frozen=True, slots=True)
class Delimiter:
    """A boundary line found in the data."""

    level: int  # index of the matched boundary in the stack, 0 = outermost
    closing: bool  # "--boundary--"
    content_end: int  # end of the preceding content: its last line break belongs here
    next_line: int  # first byte after the delimiter line


class MimeScanner:
    """Read header blocks and delimiter lines of one message's raw bytes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.defects: list[str] = []
        self.parts = 1  # entities seen, the message itself included
        # per boundary: (searched from, start of the next line opening with it, or -1)
        self.found: dict[bytes, tuple[int, int]] = {}

    def read_header(
        self, pos: int, boundaries: tuple[bytes, ...]
    ) -> tuple[int, int, Delimiter | None]:
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
    ) -> Delimiter | None:
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
        return Delimiter(
            level=level,
            closing=newline < 0 or raw.startswith(b"--", line + 2 + len(boundaries[level])),
            content_end=content_end,
            next_line=len(raw) if newline < 0 else newline + 1,
        )

    def next_delimiter(self, pos: int, boundaries: tuple[bytes, ...]) -> Delimiter | None:
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


def part_transfer_encoding(mime_header: bytes) -> str:
    """Return the Content-Transfer-Encoding a BODY[n.MIME] header declares ("7bit" if none)."""
    if not mime_header.startswith((b"\n", b"\r\n")) and not _FIELD_START.match(mime_header):
        return "7bit"
    scanner = MimeScanner(mime_header)
    header_end, _, _ = scanner.read_header(0, ())
    fields = scanner.fields(0, header_end, "part")
    return read_mime(fields, "text/plain", "part", scanner.defects).transfer_encoding
