"""Read IMAP responses off an asyncio stream, bounded, and write commands onto it.

A response is one line, or lines joined by literals (RFC 9051 section 4.3):

    line -- ends in {n}? -- no --> Response
              | yes: n <= max_literal? -- no --> ProtocolError (nothing allocated)
              v
            read n bytes, then the next line ...

Every line is capped at `max_line` bytes and every literal at `max_literal`,
checked before the bytes are buffered, so a hostile or broken server cannot
make us hold more than that. Every read has a deadline. A deadline that strikes
while waiting for a line loses no bytes (StreamReader keeps what it buffered),
so an IDLE wait reads its first line on a deadline of its own and can time out
cleanly; a deadline that strikes mid-response leaves the stream unusable, and
the caller drops the connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from app.imap.errors import ProtocolError

# An IMAP value as parsed here: atom or string (bytes), NIL (None) or a parenthesised list.
Value: TypeAlias = bytes | list["Value"] | None

_LITERAL_END = re.compile(rb"\{(\d{1,20})\+?\}$")
_HEAD = re.compile(rb"^(\*|[A-Za-z0-9]+)(?: (\d+))?(?: ([A-Za-z][A-Za-z0-9.-]*))?(?: |$)")
_TOKEN = re.compile(
    rb' *(?:(?P<open>\()|(?P<close>\))|"(?P<quoted>(?:[^"\\]|\\.)*)"'
    rb"|\{(?P<literal>\d+)\+?\}$|(?P<atom>(?:[^ ()\[\]\"{}]|\[[^\]]*\])+))"
)
_QUOTED_ESCAPE = re.compile(rb"\\(.)")
_CODE = re.compile(rb"^\[([A-Za-z0-9-]+)(?: ([^\]]*))?\] ?")
_SAFE_QUOTED = re.compile(rb"^[\x01-\x09\x0b\x0c\x0e-\x7f]*$")  # 7-bit, no CR, LF or NUL
_CONDITIONS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})


@dataclass(frozen=True, slots=True)
class WireLimits:
    """The most one response may make us buffer (a watcher never fetches bodies)."""

    max_line: int = 64 * 1024
    max_literal: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    """One server response: `tag` is b"*", b"+" or a command's tag; `name` is upper case.

    `segments` alternate text and literal data after the name: text, literal, text ...
    """

    tag: bytes
    number: int | None
    name: str
    segments: tuple[bytes, ...]

    @property
    def is_condition(self) -> bool:
        """Say whether this is OK/NO/BAD/BYE/PREAUTH, whose text may open with a [code]."""
        return self.name in _CONDITIONS

    @property
    def code(self) -> str | None:
        """Return the RFC 5530 / 9051 response code (`UNAVAILABLE`, `UIDNEXT` ...) if any."""
        match = _CODE.match(self.segments[0]) if self.is_condition else None
        return match.group(1).decode().upper() if match else None

    @property
    def code_argument(self) -> bytes:
        """Return what follows the code inside the brackets, e.g. b"4392" of [UIDNEXT 4392]."""
        match = _CODE.match(self.segments[0]) if self.is_condition else None
        return (match.group(2) or b"") if match else b""

    @property
    def text(self) -> str:
        """Return the human-readable text after any code, shortened; never our own words."""
        first = self.segments[0] if self.segments else b""
        match = _CODE.match(first) if self.is_condition else None
        return first[match.end() if match else 0 :][:300].decode("utf-8", "replace")

    def values(self) -> list[Value]:
        """Parse the data after the name into atoms, strings, NIL and lists."""
        return parse_values(self.segments)


async def read_response(
    reader: asyncio.StreamReader,
    limits: WireLimits,
    timeout: float,
    first_line: bytes | None = None,
) -> Response:
    """Read one whole response, each line and literal within `timeout` seconds.

    `first_line` is a line the caller already read (waiting on its own deadline).
    Raises ProtocolError past a limit, TimeoutError, EOFError when the server left.
    """
    line = first_line if first_line is not None else await read_line(reader, limits, timeout)
    if line.startswith(b"+"):  # a continuation request: the rest is free text or base64
        return Response(tag=b"+", number=None, name="", segments=(line[2:],))
    head = _HEAD.match(line)
    if head is None or head.group(3) is None:
        raise ProtocolError(f"unparseable response line: {line[:80]!r}")
    tag, number, name = head.group(1), head.group(2), head.group(3)
    segments = [line[head.end() :]]
    literal_total = 0
    while (literal := _LITERAL_END.search(segments[-1])) is not None:
        size = int(literal.group(1))
        literal_total += size
        if literal_total > limits.max_literal:
            raise ProtocolError(f"the server sent a literal over {limits.max_literal} bytes")
        async with asyncio.timeout(timeout):
            segments.append(await reader.readexactly(size))
        segments.append(await read_line(reader, limits, timeout))
    return Response(
        tag=tag,
        number=int(number) if number is not None else None,
        name=name.decode().upper(),
        segments=tuple(segments),
    )


async def read_line(reader: asyncio.StreamReader, limits: WireLimits, timeout: float) -> bytes:
    """Read one line without its CRLF; a deadline that strikes here loses no bytes."""
    try:
        async with asyncio.timeout(timeout):
            line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"the server sent a line over {limits.max_line} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        raise EOFError("the server closed the connection") from exc
    if len(line) > limits.max_line:
        raise ProtocolError(f"the server sent a line over {limits.max_line} bytes")
    return line[:-2]


def parse_values(segments: Sequence[bytes]) -> list[Value]:
    """Parse text segments and the literals between them into nested values."""
    stack: list[list[Value]] = [[]]
    for index, segment in enumerate(segments):
        if index % 2:  # a literal's data is one string value
            stack[-1].append(segment)
            continue
        position = 0
        while position < len(segment):
            match = _TOKEN.match(segment, position)
            if match is None or match.end() == position:
                if segment[position:].strip() == b"":
                    break
                raise ProtocolError(f"unparseable response data: {segment[position:][:80]!r}")
            position = match.end()
            if match.group("open") is not None:
                opened: list[Value] = []
                stack[-1].append(opened)
                stack.append(opened)
            elif match.group("close") is not None:
                if len(stack) == 1:
                    raise ProtocolError("unbalanced parenthesis in a response")
                stack.pop()
            elif match.group("quoted") is not None:
                stack[-1].append(_QUOTED_ESCAPE.sub(rb"\1", match.group("quoted")))
            elif match.group("atom") is not None:
                atom = match.group("atom")
                stack[-1].append(None if atom.upper() == b"NIL" else atom)
            # a literal marker: its data is the next segment
    if len(stack) != 1:
        raise ProtocolError("unbalanced parenthesis in a response")
    return stack[0]


@dataclass(frozen=True, slots=True)
class Literal:
    """An argument sent as a literal: it holds 8-bit data, CR or LF, or is long."""

    data: bytes


Argument: TypeAlias = bytes | Literal


def astring(value: str | bytes) -> Argument:
    """Encode a string argument: a quoted string when that is safe, else a literal.

    Quoting escapes `\\` and `"` (RFC 9051 `quoted`); anything a quoted string
    cannot carry (8-bit bytes, CR, LF, NUL) goes as a literal, so user names and
    passwords are sent exactly and can never end the command line early.
    """
    data = value.encode() if isinstance(value, str) else value
    if len(data) < 1024 and _SAFE_QUOTED.match(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return Literal(data)


def as_text(value: Value) -> str:
    """Return an atom or string value as text, refusing lists and NIL."""
    if not isinstance(value, bytes):
        raise ProtocolError(f"expected a string, got {value!r}"[:120])
    return value.decode("utf-8", "replace")


def as_number(value: Value) -> int:
    """Return a number value, refusing anything else."""
    if not isinstance(value, bytes) or not value.isdigit():
        raise ProtocolError(f"expected a number, got {value!r}"[:120])
    return int(value)


def as_list(value: Value) -> list[Value]:
    """Return a parenthesised list value, refusing anything else."""
    if not isinstance(value, list):
        raise ProtocolError(f"expected a list, got {value!r}"[:120])
    return value


def pairs(values: Sequence[Value]) -> dict[str, Value]:
    """Read `(NAME value NAME value ...)` (STATUS, FETCH data) into a dict by upper-case name."""
    if len(values) % 2:
        raise ProtocolError("an odd number of items in a name/value list")
    return {as_text(values[i]).upper(): values[i + 1] for i in range(0, len(values), 2)}
