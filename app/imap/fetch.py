"""Read bulk UID FETCH answers straight off imaplib's connection.

imapclient's `fetch()` sends every response line through imaplib's bookkeeping
(a regex and a dictionary append per line and per literal) and then through a
general IMAP lexer written in Python; for whole-body downloads that costs as
much CPU as TLS does. This reader sends the command through imaplib, so the
session's state checks and command counter still apply, then reads the answer
itself and parses the few FETCH items it understands with a strict parser:

    line  --untagged "* n FETCH"--> strict parse --not understood--> imapclient's parser
          --other untagged-------> kept in imaplib's untagged_responses, as imaplib would
          --our tag--------------> done (NO/BAD raise like imapclient's fetch)

Responses are framed exactly as imaplib frames them (a line ending in `{n}`
announces n bytes of literal), so only the parsing differs, and a response the
strict parser does not fully understand costs speed, never correctness.
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from imapclient.datetime_util import parse_to_datetime
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response

FetchData = dict[bytes, Any]

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\Z")
_FETCH_OPEN = re.compile(rb"\* (\d+) FETCH \(")
_ITEM_NAME = re.compile(rb"([A-Za-z0-9.-]+(?:\[\])?) ")
_NUMBER = re.compile(rb"\d+")
_FLAG_LIST = re.compile(rb'\(([^()"{}\\\r\n]*(?:\\[^()"{}\\\r\n]*)*)\)')
_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')
_PARENTHESISED_NUMBER = re.compile(rb"\((\d+)\)")
_NIL = b"NIL"
# imaplib's own patterns (module-private there): the same framing and classification.
_TAGGED = re.compile(rb"(?P<tag>\S+) (?P<type>[A-Z]+) (?P<data>.*)", re.ASCII)
_UNTAGGED_STATUS = re.compile(rb"\* (?P<data>\d+) (?P<type>[A-Z-]+)( (?P<data2>.*))?", re.ASCII)
_UNTAGGED = re.compile(rb"\* (?P<type>[A-Z-]+)( (?P<data>.*))?", re.ASCII)
_RESPONSE_CODE = re.compile(rb"\[(?P<type>[A-Z-]+)( (?P<data>.*))?\]", re.ASCII)
_CONTINUATION = re.compile(rb"\+( (?P<data>.*))?", re.ASCII)


class _NotUnderstood(Exception):
    """The strict parser met something it does not read; imapclient's parser will."""


def uid_fetch(
    imap: imaplib.IMAP4, uids: Sequence[int], items: Sequence[bytes]
) -> Iterator[tuple[int, FetchData]]:
    """UID FETCH `items` of `uids`; yield each response's UID and items as it arrives.

    Values have imapclient's types (`b"SEQ"` included). A message may come in
    more than one response (an unsolicited flag update); merge them in order,
    as imapclient does. Responses about other messages are dropped. Parsing
    while the server is still sending lets it work ahead into the socket
    buffers. Consume the iterator to the end: the session is unusable until
    the tagged response has been read.
    """
    if not uids:
        return
    uid_set = ",".join(str(uid) for uid in uids)
    tag = imap._command("UID", "FETCH", uid_set, "(" + " ".join(i.decode() for i in items) + ")")
    wanted = set(uids)
    tag_prefix = tag + b" "
    try:
        while True:
            line = _read_line(imap)
            if line.startswith(tag_prefix):
                break
            texts, literals = _read_response(imap, line)
            status = _UNTAGGED_STATUS.match(texts[0])
            if status is None or status.group("type") != b"FETCH":
                _keep_untagged(imap, texts, literals)
                continue
            for uid, data in _parse_fetch(texts, literals).items():
                if uid in wanted:
                    yield uid, data
    except imaplib.IMAP4.abort as exc:
        raise imap.abort(f"command: FETCH => {exc}") from exc
    _complete(imap, tag, line)


def _complete(imap: imaplib.IMAP4, tag: bytes, line: bytes) -> None:
    """Finish the command on its tagged line, raising as imaplib and imapclient would."""
    tagged = _TAGGED.match(line)
    if tagged is None:
        raise imap.abort(f"unexpected response: {line!r}")
    del imap.tagged_commands[tag]
    imap._check_bye()
    status, text = tagged.group("type"), tagged.group("data")
    if status == b"BAD":
        raise imap.error(f"FETCH command error: BAD [{text!r}]")
    if status != b"OK":
        raise IMAPClientError(f"fetch failed: {text.decode('utf-8', errors='replace')}")


def _read_line(imap: imaplib.IMAP4) -> bytes:
    line: bytes = imap.readline()
    if not line:
        raise imap.abort("socket error: EOF")
    if not line.endswith(b"\r\n"):
        raise imap.abort(f"socket error: unterminated line: {line[:100]!r}")
    return line[:-2]


def _read_response(imap: imaplib.IMAP4, first: bytes) -> tuple[list[bytes], list[bytes]]:
    """Read the literals and continuation lines of an untagged response.

    Returns its text lines and the literals between them: `texts[i]` ends with
    the `{n}` that announced `literals[i]`.
    """
    texts, literals = [first], []
    announced = _LITERAL_AT_END.search(first)
    while announced is not None:
        size = int(announced.group(1))
        literal: bytes = imap.read(size)
        if len(literal) != size:
            raise imap.abort("socket error: EOF inside a literal")
        literals.append(literal)
        line = _read_line(imap)
        texts.append(line)
        announced = _LITERAL_AT_END.search(line)
    return texts, literals


def _keep_untagged(imap: imaplib.IMAP4, texts: list[bytes], literals: list[bytes]) -> None:
    """Store a response that is not FETCH data in imaplib's `untagged_responses`.

    Same classification and storage as imaplib's `_get_response`, so EXISTS,
    EXPUNGE, VANISHED or a BYE arriving during the fetch is where imaplib and
    imapclient look for it.
    """
    first = texts[0]
    match = _UNTAGGED.match(first)
    if match is not None:
        typ, data = match.group("type"), match.group("data") or b""
    else:
        match = _UNTAGGED_STATUS.match(first)
        if match is None:
            if _CONTINUATION.match(first):
                return  # imaplib ignores a stray continuation while waiting for the tag too
            raise imap.abort(f"unexpected response: {first!r}")
        typ, data = match.group("type"), match.group("data")
        if match.group("data2"):
            data = data + b" " + match.group("data2")
    name = typ.decode("ascii")
    for literal, following in zip(literals, texts[1:], strict=True):
        imap._append_untagged(name, (data, literal))
        data = following
    imap._append_untagged(name, data)
    if name in ("OK", "NO", "BAD"):
        code = _RESPONSE_CODE.match(data)
        if code is not None:
            imap._append_untagged(code.group("type").decode("ascii"), code.group("data"))


def _parse_fetch(texts: list[bytes], literals: list[bytes]) -> dict[int, FetchData]:
    """Parse one FETCH response, strictly or else with imapclient's general parser."""
    try:
        uid, data = _parse_strictly(texts, literals)
    except _NotUnderstood:
        return _parse_generally(texts, literals)
    return {uid: data}


def _parse_generally(texts: list[bytes], literals: list[bytes]) -> dict[int, FetchData]:
    """Hand the response to imapclient in the shape imaplib would have stored it in."""
    untagged = _UNTAGGED_STATUS.match(texts[0])
    assert untagged is not None, "only FETCH responses come here"
    data = untagged.group("data") + b" " + (untagged.group("data2") or b"")
    stored: list[Any] = []
    for literal, following in zip(literals, texts[1:], strict=True):
        stored.append((data, literal))
        data = following
    stored.append(data)
    parsed: dict[int, FetchData] = parse_fetch_response(stored, False, True)
    return parsed


def _number(text: bytes, pos: int) -> tuple[int, int]:
    match = _NUMBER.match(text, pos)
    if match is None:
        raise _NotUnderstood
    return int(match.group()), match.end()


def _flags(text: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    match = _FLAG_LIST.match(text, pos)
    if match is None:
        raise _NotUnderstood
    return tuple(match.group(1).split()), match.end()


def _internal_date(text: bytes, pos: int) -> tuple[Any, int]:
    match = _QUOTED.match(text, pos)
    if match is None:
        raise _NotUnderstood
    try:
        return parse_to_datetime(match.group(1), normalise=False), match.end()
    except ValueError as exc:  # imapclient's parser decides what a bad date becomes
        raise _NotUnderstood from exc


def _modseq(text: bytes, pos: int) -> tuple[tuple[int], int]:
    match = _PARENTHESISED_NUMBER.match(text, pos)
    if match is None:
        raise _NotUnderstood
    return (int(match.group(1)),), match.end()


_SCALAR_ITEMS: dict[bytes, Callable[[bytes, int], tuple[Any, int]]] = {
    b"UID": _number,
    b"RFC822.SIZE": _number,
    b"X-GM-MSGID": _number,
    b"FLAGS": _flags,
    b"INTERNALDATE": _internal_date,
    b"MODSEQ": _modseq,
}


def _parse_strictly(texts: list[bytes], literals: list[bytes]) -> tuple[int, FetchData]:
    """Read `* n FETCH (item value ...)` with UID, FLAGS, INTERNALDATE, sizes, MODSEQ, BODY[].

    Items may come in any order; BODY[] is a literal or NIL. Anything else
    (another item, a quoted body, an escape in a quoted string, a flag with
    odd characters) raises `_NotUnderstood`.
    """
    text = texts[0]
    opening = _FETCH_OPEN.match(text)
    if opening is None:
        raise _NotUnderstood
    seq = int(opening.group(1))
    data: FetchData = {b"SEQ": seq}
    segment, pos = 0, opening.end()
    while True:
        item = _ITEM_NAME.match(text, pos)
        if item is None:
            raise _NotUnderstood
        name, pos = item.group(1).upper(), item.end()
        if name == b"BODY[]" and text.startswith(_NIL, pos):
            data[name], pos = None, pos + len(_NIL)
        elif name == b"BODY[]":
            if segment >= len(literals) or _LITERAL_AT_END.match(text, pos) is None:
                raise _NotUnderstood
            data[name] = literals[segment]
            segment += 1
            text, pos = texts[segment], 0
        elif name in _SCALAR_ITEMS:
            data[name], pos = _SCALAR_ITEMS[name](text, pos)
        else:
            raise _NotUnderstood
        if text.startswith(b" ", pos):
            pos += 1
        elif text[pos:] == b")" and segment == len(literals):
            uid = data.pop(b"UID", seq)  # keyed by UID, as imapclient does with use_uid
            return uid, data
        else:
            raise _NotUnderstood
