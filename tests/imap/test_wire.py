"""IMAP response framing and argument encoding, on bytes as servers send them."""

from __future__ import annotations

import asyncio

import pytest

from app.imap.errors import ProtocolError
from app.imap.wire import Literal, Response, WireLimits, astring, read_response


def parse(data: bytes, limits: WireLimits | None = None) -> Response:
    async def read() -> Response:
        reader = asyncio.StreamReader(limit=(limits or WireLimits()).max_line)
        reader.feed_data(data)
        reader.feed_eof()
        return await read_response(reader, limits or WireLimits(), timeout=1)

    return asyncio.run(read())


def test_a_status_response_with_a_literal_folder_name_parses() -> None:
    response = parse(b'* STATUS {9}\r\nA (B) "C" (MESSAGES 3 UIDNEXT 7)\r\n')
    assert (response.tag, response.name) == (b"*", "STATUS")
    assert response.values() == [b'A (B) "C"', [b"MESSAGES", b"3", b"UIDNEXT", b"7"]]


def test_quoted_strings_nil_and_nested_lists_parse() -> None:
    response = parse(b'* 4 FETCH (UID 9 FLAGS (\\Seen $Junk) X "a \\"b\\" \\\\c" Y NIL)\r\n')
    assert (response.number, response.name) == (4, "FETCH")
    assert response.values() == [
        [b"UID", b"9", b"FLAGS", [b"\\Seen", b"$Junk"], b"X", b'a "b" \\c', b"Y", None]
    ]


def test_a_condition_response_gives_its_code_and_text() -> None:
    response = parse(b"W7 NO [UNAVAILABLE] try later\r\n")
    assert (response.tag, response.name, response.code) == (b"W7", "NO", "UNAVAILABLE")
    assert response.text == "try later"
    assert parse(b"* OK [UIDNEXT 42] predicted\r\n").code_argument == b"42"


def test_literals_together_over_the_cap_are_refused() -> None:
    data = b"* X {3}\r\nabc {3}\r\ndef\r\n"
    with pytest.raises(ProtocolError, match="literal over 5"):
        parse(data, WireLimits(max_literal=5))


def test_astring_quotes_what_it_can_and_sends_the_rest_as_a_literal() -> None:
    assert astring('pa"ss\\word') == b'"pa\\"ss\\\\word"'
    assert astring("wörd") == Literal("wörd".encode())
    assert astring("a\r\nb") == Literal(b"a\r\nb")
