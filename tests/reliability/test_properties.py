"""Properties that must hold for every input, checked on generated ones (hypothesis).

User search terms can never add IMAP syntax to a SEARCH command, and the header,
address and message parsers answer any bytes or text without raising.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.imap.headers import decode_header_value, parse_addresses
from app.imap.message import Address, ParsedMessage
from app.imap.message import parse_message as parse_raw_message
from app.imap.search import SearchQueryBuilder
from tests.support.search_wire import Q, parse, terms_in_every_position, values, wire

# Bounded so the file runs in seconds; no example database written into the checkout.
PROPERTY = settings(max_examples=300, deadline=None, database=None)

# Printable text, controls, non-ASCII, astral: everything a user could type but CR, LF, NUL.
# Text a user can type: any character but CR, LF, NUL and lone surrogates (not Unicode text).
safe_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=40)
# Pieces of IMAP syntax, so generated terms often try to break out of their string.
imap_syntax = st.sampled_from(
    ['"', "\\", "(", ")", "{5}", "{0}\r", "{3+}", " OR ", "ALL", "NIL", "*", "%", "]", "é"]
)
hostile_terms = (
    st.lists(imap_syntax | safe_text, max_size=6)
    .map("".join)
    .filter(lambda term: not any(char in term for char in "\r\n\x00"))
)
# Pieces of headers: encoded words, address syntax, charsets, folding.
HEADER_FRAGMENTS = [
        "=?",
        "?=",
        "utf-8",
        "iso-8859-1",
        "x-unknown",
        "?B?",
        "?Q?",
        "?b?",
        "w6k=",
        "=C3=A9",
        "=?utf-8?B?w6k?=",
        "=?utf-8?Q?a_b?=",
        "(",
        ")",
        "<",
        ">",
        '"',
        "\\",
        ",",
        ";",
        ":",
        "@",
        "@@",
        "\r\n ",
        "\n\t",
        "\x00",
        "group:",
        "é",
        " ",
]  # fmt: skip
header_texts = st.lists(st.sampled_from(HEADER_FRAGMENTS) | st.text(max_size=8), max_size=12).map(
    "".join
)
header_values = st.one_of(
    header_texts,
    header_texts.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.text(max_size=200),
)
# Pieces of messages: header fields, boundaries, MIME parameters, encodings.
MESSAGE_FRAGMENTS = [
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b"Subject: ",
        b"From: ",
        b"To: a@b, ",
        b"Message-ID: <",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: multipart/",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: text/plain; charset=",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename*=UTF-8''%E2%82",
        b"--b\r\n",
        b"--b--",
        b"--",
        b"=?utf-8?B?",
        b"?=",
        b"=\r\n",
        b"=E9",
        b"\x00",
        b"\xff\xfe",
        b"utf-16",
        b"Content-ID: <c>\r\n",
        b'<img src="cid:c">',
        b"Content-Type: text/html\r\n",
]  # fmt: skip
raw_messages = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(MESSAGE_FRAGMENTS) | st.binary(max_size=12), max_size=40).map(
        b"".join
    ),
)

TERM_METHODS: dict[str, Callable[[str], SearchQueryBuilder]] = {
    "sender": Q.sender,
    "to": Q.to,
    "cc": Q.cc,
    "bcc": Q.bcc,
    "subject": Q.subject,
    "body": Q.body,
    "text": Q.text,
    "header value": lambda term: Q.header("X-Tag", term),
}


@PROPERTY
@given(term=hostile_terms)
def test_a_search_term_reaches_the_server_as_exactly_one_value(term: str) -> None:
    for builder in terms_in_every_position(term):
        query = builder.build()
        assert parse(wire(query)) == values(query.criteria)


@PROPERTY
@given(
    before=safe_text,
    after=safe_text,
    breaker=st.sampled_from(["\r", "\n", "\x00", "\r\n"]),
    field=st.sampled_from(sorted(TERM_METHODS)),
)
def test_a_term_holding_cr_lf_or_nul_is_refused_naming_its_field(
    before: str, after: str, breaker: str, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field} must not contain CR, LF or NUL"):
        TERM_METHODS[field](before + breaker + after)


@PROPERTY
@given(
    before=safe_text,
    after=safe_text,
    surrogate=st.characters(categories=["Cs"]),
    field=st.sampled_from(sorted(TERM_METHODS)),
)
def test_a_term_that_is_not_unicode_text_is_refused_naming_its_field(
    before: str, after: str, surrogate: str, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field} is not valid Unicode text"):
        TERM_METHODS[field](before + surrogate + after)


@PROPERTY
@given(value=header_values)
def test_decode_header_value_answers_text_for_anything(value: str | bytes) -> None:
    decoded = decode_header_value(value)

    assert isinstance(decoded, str)
    assert "\x00" not in decoded


@PROPERTY
@given(value=header_values)
def test_parse_addresses_answers_addresses_for_anything(value: str | bytes) -> None:
    addresses = parse_addresses(value)

    assert isinstance(addresses, tuple)
    for address in addresses:
        assert isinstance(address, Address)
        assert isinstance(address.name, str)
        assert isinstance(address.email, str)
        assert address.email


@PROPERTY
@given(raw=raw_messages)
def test_parse_message_reads_any_bytes_without_raising(raw: bytes) -> None:
    parsed = parse_raw_message(raw, uid=1)

    assert isinstance(parsed, ParsedMessage)
    texts = [parsed.subject, parsed.headers, parsed.text or "", parsed.html or ""]
    assert all(isinstance(text, str) and "\x00" not in text for text in texts)
    assert all(attachment.size >= 0 for attachment in parsed.attachments)
    assert parsed.size == len(raw)
