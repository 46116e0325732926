"""Parsing fetched messages: bodies, headers, attachments and IMAP part numbers, broken input."""

from __future__ import annotations

import base64
import random
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.imap.headers import decode_header_value, parse_addresses
from app.imap.message import Address, ParsedMessage, normalise_flags, parse_message
from app.imap.mime_scan import part_transfer_encoding
from app.imap.transfer import TransferDecoder
from tests.support.mailgen import Attachment, make_message

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200)) * 3


def decode_section(mime: bytes, body: bytes) -> bytes:
    """Decode BODY[n] by the encoding its BODY[n.MIME] declares, as an attachment download does."""
    decoder = TransferDecoder(part_transfer_encoding(mime))
    return decoder.feed(body) + decoder.finish()


def raw_message(*headers: str | bytes, body: bytes = b"") -> bytes:
    """Build message bytes by hand (CRLF), with From and Date unless given."""
    lines = [line.encode() if isinstance(line, str) else line for line in headers]
    names = {line.split(b":", 1)[0].lower() for line in lines}
    defaults = [b"From: Alice <alice@example.com>", b"Date: Mon, 1 Jan 2024 10:00:00 +0000"]
    lines = [line for line in defaults if line.split(b":", 1)[0].lower() not in names] + lines
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


def multipart(boundary: str, *parts: bytes, close: bool = True) -> bytes:
    """Join MIME parts (each its own header, blank line, body) with a boundary."""
    delimiter = f"--{boundary}\r\n".encode()
    closing = f"--{boundary}--\r\n".encode() if close else b""
    return b"".join(delimiter + part + b"\r\n" for part in parts) + closing


def parse(raw: bytes) -> ParsedMessage:
    return parse_message(raw, uid=7)


def part_ids(message: ParsedMessage) -> list[str]:
    return [attachment.part_id for attachment in message.attachments]


def test_alternative_message_gives_both_bodies_and_no_attachments() -> None:
    raw = make_message(text="Hello Bob,\nplain\n", html="<p>Hello <b>Bob</b></p>\n")

    message = parse(raw)

    assert message.text is not None and message.text.replace("\r\n", "\n") == "Hello Bob,\nplain\n"
    assert message.html is not None and "<p>Hello <b>Bob</b></p>" in message.html
    assert message.attachments == ()
    assert not message.malformed, message.defects


def test_envelope_fields_are_decoded() -> None:
    raw = make_message(
        subject="Quarterly report",
        sender="Alice Example <alice@example.com>",
        to="Bob Example <bob@example.com>, carol@example.com",
        cc="Dan <dan@example.com>",
        bcc="eve@example.com",
        date=datetime(2024, 3, 5, 9, 30, tzinfo=UTC),
        message_id="<report-1@example.com>",
        headers={"Reply-To": "Sales <sales@example.com>"},
    )

    message = parse_message(
        raw, uid=42, flags=[b"\\Seen", "$Label"], size=123, gm_msgid=99, internal_date=None
    )

    assert (message.uid, message.size, message.gm_msgid) == (42, 123, 99)
    assert message.subject == "Quarterly report"
    assert message.sender == Address("Alice Example", "alice@example.com")
    assert message.to == (
        Address("Bob Example", "bob@example.com"),
        Address("", "carol@example.com"),
    )
    assert message.cc == (Address("Dan", "dan@example.com"),)
    assert message.bcc == (Address("", "eve@example.com"),)
    assert message.reply_to == (Address("Sales", "sales@example.com"),)
    assert message.date == datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
    assert message.message_id == "<report-1@example.com>"
    assert message.seen and not message.flagged
    assert message.flags == {"\\Seen", "$Label"}
    assert message.headers.startswith("Subject: Quarterly report")


@pytest.mark.parametrize(
    ("charset", "encoded", "expected"),
    [
        ("iso-8859-1", "Crème brûlée à Noël".encode("iso-8859-1"), "Crème brûlée à Noël"),
        ("windows-1252", "“Smart” quotes – €5".encode("cp1252"), "“Smart” quotes – €5"),
        ("koi8-r", "Привет, мир".encode("koi8-r"), "Привет, мир"),
    ],
)
def test_text_is_decoded_in_its_declared_charset(
    charset: str, encoded: bytes, expected: str
) -> None:
    raw = raw_message(
        f'Content-Type: text/plain; charset="{charset}"',
        "Content-Transfer-Encoding: 8bit",
        body=encoded,
    )

    message = parse(raw)

    assert message.text == expected
    assert not message.malformed, message.defects


def test_quoted_printable_utf8_text_is_decoded() -> None:
    raw = raw_message(
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        body=b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, a long line that is soft=\r\n-wrapped =E2=82=AC",
    )

    assert parse(raw).text == "Grüße aus Köln, a long line that is soft-wrapped €"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?utf-8?B?w4lsw6lvbm9yZSDwn5iA?=", "Éléonore 😀"),
        ("=?UTF-8?Q?Caf=C3=A9_cr=C3=A8me?=", "Café crème"),
        ("Re: =?utf-8?q?caf=C3=A9?= at =?utf-8?b?5p2x5Lqs?= today", "Re: café at 東京 today"),
        ("=?utf-8?q?split_=E2=82?= =?utf-8?q?=AC_sign?=", "split € sign"),
        ("=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=", "日本語"),
        ("=?utf-8?q?folded?=\r\n =?utf-8?q?_words?=", "folded words"),
        ("plain subject, no encoding", "plain subject, no encoding"),
    ],
)
def test_rfc2047_subjects_are_decoded(header: str, expected: str) -> None:
    assert parse(raw_message(f"Subject: {header}")).subject == expected
    assert decode_header_value(header) == expected


def test_rfc2231_filename_is_decoded() -> None:
    attachment = (
        b"Content-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF)
    )
    continued = (
        b"Content-Type: text/csv\r\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''Pr%C3%BCfung; filename*1=\".csv\"\r\n"
        b"\r\na,b"
    )
    outlook_style = (
        b'Content-Type: image/png; name="=?utf-8?B?w7xiZXIucG5n?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PNG)
    )
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=b1",
        body=multipart("b1", b"\r\nbody", attachment, continued, outlook_style),
    )

    message = parse(raw)

    filenames = [attachment.filename for attachment in message.attachments]
    assert filenames == ["€ rates.pdf", "Prüfung.csv", "über.png"]
    assert [attachment.size for attachment in message.attachments] == [len(PDF), 3, len(PNG)]


def test_address_lists_keep_commas_quotes_and_encoded_names() -> None:
    value = (
        '"Doe, John" <john@example.com>, =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jorg@example.com>,'
        ' "O\'Brien \\"Bob\\"" <bob@example.com>, plain@example.com,'
        ' "=?utf-8?b?5bGx55SwLCDlpKrpg44=?=" <taro@example.jp>, undisclosed-recipients:;'
    )

    expected = (
        Address("Doe, John", "john@example.com"),
        Address("Jörg Müller", "jorg@example.com"),
        Address('O\'Brien "Bob"', "bob@example.com"),
        Address("", "plain@example.com"),
        Address("山田, 太郎", "taro@example.jp"),
    )
    assert parse_addresses(value) == expected
    assert parse(raw_message(f"To: {value}")).to == expected


def test_single_part_message_is_part_1() -> None:
    raw = raw_message(
        "Content-Type: application/pdf; name=scan.pdf",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(PDF),
    )

    message = parse(raw)

    assert message.text is None and message.html is None
    [scan] = message.attachments
    assert (scan.part_id, scan.filename, scan.content_type, scan.size) == (
        "1",
        "scan.pdf",
        "application/pdf",
        len(PDF),
    )


def test_mixed_message_numbers_two_attachments_after_the_text() -> None:
    raw = make_message(
        text="See attached.\n",
        attachments=(
            Attachment("report.pdf", PDF, "application/pdf"),
            Attachment("chart.png", PNG, "image/png"),
        ),
    )

    message = parse(raw)

    assert message.text is not None and message.text.startswith("See attached.")
    assert [(a.part_id, a.filename, a.content_type, a.size) for a in message.attachments] == [
        ("2", "report.pdf", "application/pdf", len(PDF)),
        ("3", "chart.png", "image/png", len(PNG)),
    ]
    assert not any(attachment.inline for attachment in message.attachments)


def test_alternative_inside_mixed_puts_bodies_in_part_1_and_attachment_in_2() -> None:
    raw = make_message(
        text="plain body\n",
        html="<p>html body</p>\n",
        attachments=(Attachment("report.pdf", PDF, "application/pdf"),),
    )

    message = parse(raw)

    assert message.text is not None and message.text.startswith("plain body")
    assert message.html is not None and message.html.startswith("<p>html body</p>")
    assert part_ids(message) == ["2"]


def test_related_inline_image_is_an_inline_attachment_with_its_content_id() -> None:
    raw = make_message(
        text=None,
        html='<p>Logo: <img src="cid:logo@example.com"></p>\n',
        attachments=(
            Attachment("logo.png", PNG, "image/png", inline_cid="logo@example.com"),
            Attachment("terms.pdf", PDF, "application/pdf"),
        ),
    )

    message = parse(raw)

    assert message.html is not None and "cid:logo@example.com" in message.html
    logo, terms = message.attachments
    assert (logo.part_id, logo.content_id, logo.inline, logo.size) == (
        "1.2",
        "logo@example.com",
        True,
        len(PNG),
    )
    assert (terms.part_id, terms.inline) == ("2", False)


def test_forwarded_message_is_an_attachment_and_its_parts_are_numbered_under_it() -> None:
    forwarded = make_message(
        subject="Quarterly numbers",
        text="inner body\n",
        attachments=(Attachment("q3.pdf", PDF, "application/pdf"),),
    )
    raw = raw_message(
        "Subject: Fwd: Quarterly numbers",
        "Content-Type: multipart/mixed; boundary=outer",
        body=multipart(
            "outer",
            b"Content-Type: text/plain\r\n\r\nSee the forwarded mail.",
            b"Content-Type: message/rfc822\r\n\r\n" + forwarded,
        ),
    )

    message = parse(raw)

    assert message.text == "See the forwarded mail."
    eml, inner_pdf = message.attachments
    assert (eml.part_id, eml.filename, eml.content_type) == (
        "2",
        "Quarterly numbers.eml",
        "message/rfc822",
    )
    assert eml.size == len(forwarded)
    assert (inner_pdf.part_id, inner_pdf.filename, inner_pdf.size) == ("2.2", "q3.pdf", len(PDF))


def test_forwarded_single_part_message_body_is_part_n_1_and_unnamed_one_is_message_eml() -> None:
    inner = b"From: x@example.com\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64"
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=outer",
        body=multipart(
            "outer",
            b"\r\nbody",
            b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n\r\n" + base64.encodebytes(PNG),
        ),
    )

    message = parse(raw)

    assert [(a.part_id, a.filename) for a in message.attachments] == [
        ("2", "message.eml"),
        ("2.1", None),
    ]
    assert message.attachments[1].size == len(PNG)


def test_digest_parts_default_to_messages() -> None:
    raw = raw_message(
        "Content-Type: multipart/digest; boundary=d",
        body=multipart("d", b"\r\nSubject: first\r\n\r\none", b"\r\nSubject: second\r\n\r\ntwo"),
    )

    message = parse(raw)

    assert [(a.part_id, a.filename, a.content_type) for a in message.attachments] == [
        ("1", "first.eml", "message/rfc822"),
        ("2", "second.eml", "message/rfc822"),
    ]


def test_a_second_plain_body_stays_reachable_as_an_attachment() -> None:
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=b",
        body=multipart(
            "b",
            b"Content-Type: text/plain\r\n\r\nmain text",
            b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(PNG),
            b"Content-Type: text/plain\r\n\r\nfooter text",
        ),
    )

    message = parse(raw)

    assert message.text == "main text"
    assert [(a.part_id, a.content_type, a.size) for a in message.attachments] == [
        ("2", "image/png", len(PNG)),
        ("3", "text/plain", len("footer text")),
    ]


def test_text_part_with_a_filename_is_an_attachment_not_the_body() -> None:
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=b",
        body=multipart(
            "b",
            b"Content-Type: text/plain\r\n\r\nthe body",
            b"Content-Type: text/plain\r\nContent-Disposition: inline; filename=notes.txt\r\n"
            b"\r\nnotes",
            b"Content-Type: text/html\r\nContent-Disposition: attachment\r\n\r\n<p>page</p>",
        ),
    )

    message = parse(raw)

    assert message.text == "the body"
    assert message.html is None
    assert [(a.part_id, a.filename, a.inline) for a in message.attachments] == [
        ("2", "notes.txt", True),
        ("3", None, False),
    ]


def test_missing_message_id_leaves_identity_and_thread_key_empty() -> None:
    message = parse(make_message(message_id=None))

    assert message.message_id is None
    assert message.thread_key is None
    assert not message.malformed, message.defects


def test_thread_key_is_the_root_of_references() -> None:
    raw = raw_message(
        "Message-ID: <reply-2@example.com>",
        "In-Reply-To: <reply-1@example.com> (Bob's message)",
        "References: <root@example.com>\r\n <reply-1@example.com>",
    )

    message = parse(raw)

    assert message.references == ("<root@example.com>", "<reply-1@example.com>")
    assert message.in_reply_to == "<reply-1@example.com>"
    assert message.thread_key == "<root@example.com>"


def test_thread_key_falls_back_to_in_reply_to_then_own_id() -> None:
    replying = parse(raw_message("Message-ID: <b@x>", "In-Reply-To: <a@x>"))
    starting = parse(raw_message("Message-ID: <a@x>"))

    assert replying.thread_key == "<a@x>"
    assert starting.thread_key == "<a@x>"


def test_message_ids_are_normalised_to_angle_brackets_without_whitespace() -> None:
    message = parse(
        raw_message("Message-ID:  < abc.123@example.com >", "References: root@x  other@y")
    )

    assert message.message_id == "<abc.123@example.com>"
    assert message.references == ("<root@x>", "<other@y>")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "Tue, 5 Mar 2024 09:30:00 +0200",
            datetime(2024, 3, 5, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("Tue, 5 Mar 2024 09:30:00", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("5 Mar 2024 09:30:00 -0000", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("Tue, 5 Mar 2024 09:30:00 EST", datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
        ("Tue,05 mar 2024 09:30 -0530 (IST)", datetime(2024, 3, 5, 15, 0, tzinfo=UTC)),
        ("Tue, 5 Mar 2024 23:59:60 +0000", datetime(2024, 3, 5, 23, 59, 59, tzinfo=UTC)),
        ("Tue 5 March 2024 09:30:00 +0100", datetime(2024, 3, 5, 8, 30, tzinfo=UTC)),
        ("Tue, 5 Mar 24 09:30:00 +0000", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("Tue, 5 Mar 0024 09:30:00 +0000", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("Tue, 5 Mar 2024 9:30:00 +0000", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
    ],
)
def test_dates_are_timezone_aware(header: str, expected: datetime) -> None:
    message = parse(raw_message(f"Date: {header}"))

    assert message.date == expected
    assert message.date is not None and message.date.tzinfo is not None


@pytest.mark.parametrize("header", ["yesterday afternoon", "Mon, 31 Feb 2024 10:00:00 +0000", ""])
def test_unparseable_date_is_none_and_a_defect(header: str) -> None:
    message = parse(raw_message(f"Date: {header}"))

    assert message.date is None
    assert any("Date" in defect for defect in message.defects)


def test_naive_internal_date_becomes_aware() -> None:
    message = parse_message(make_message(), uid=1, internal_date=datetime(2024, 1, 2, 3, 4, 5))

    assert message.internal_date is not None and message.internal_date.tzinfo is not None


def test_broken_boundary_keeps_the_body_as_text_and_records_a_defect() -> None:
    raw = raw_message(
        "Content-Type: multipart/alternative; boundary=declared",
        body=b"--actual\r\nContent-Type: text/plain\r\n\r\nstill readable\r\n--actual--\r\n",
    )

    message = parse(raw)

    assert message.text is not None and "still readable" in message.text
    assert message.attachments == ()
    assert any("boundary" in defect for defect in message.defects)


def test_unclosed_multipart_keeps_its_parts() -> None:
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=b",
        body=multipart(
            "b",
            b"\r\nbody",
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(PDF),
            close=False,
        ),
    )

    message = parse(raw)

    assert message.text == "body"
    assert [(a.part_id, a.size) for a in message.attachments] == [("2", len(PDF))]
    assert any("not closed" in defect for defect in message.defects)


def test_multipart_without_boundary_is_a_defect() -> None:
    message = parse(raw_message("Content-Type: multipart/mixed", body=b"just text"))

    assert message.text == "just text"
    assert any("without a boundary" in defect for defect in message.defects)


ALTERNATIVE_PARTS = (
    b"Content-Type: text/plain\r\n\r\none",
    b"Content-Type: text/html\r\n\r\n<p>two</p>",
)


@pytest.mark.parametrize(
    ("parameters", "boundary"),
    [
        ("boundary=plain", "plain"),
        ('boundary="quoted with spaces"', "quoted with spaces"),
        ('BOUNDARY = "upper case name"', "upper case name"),
        ('charset=utf-8; boundary="after"; format=flowed', "after"),
        ('boundary="semi;colon"; charset=utf-8', "semi;colon"),
        ("boundary=first; boundary=second", "first"),
        ('boundary="escaped \\"quote"', 'escaped "quote'),
        ('x="a quote; boundary=inside"; boundary=outside', "outside"),
    ],
)
def test_boundary_parameters_are_read_as_the_stdlib_reads_them(
    parameters: str, boundary: str
) -> None:
    raw = raw_message(
        f"Content-Type: multipart/alternative; {parameters}",
        body=multipart(boundary, *ALTERNATIVE_PARTS),
    )

    message = parse(raw)

    assert (message.text, message.html) == ("one", "<p>two</p>")
    assert not message.malformed, message.defects


@pytest.mark.parametrize(
    "parameters",
    ["boundary*=us-ascii''b", 'x="an unclosed quote; boundary=b'],
)
def test_a_boundary_the_stdlib_does_not_read_is_no_boundary(parameters: str) -> None:
    raw = raw_message(
        f"Content-Type: multipart/alternative; {parameters}",
        body=multipart("b", *ALTERNATIVE_PARTS),
    )

    message = parse(raw)

    assert any("without a boundary" in defect for defect in message.defects)


def test_messages_alike_but_for_their_boundaries_each_split_at_their_own() -> None:
    # Content-Type readings are cached per process without the boundary: the
    # boundary of an earlier message must never split a later one.
    for n in range(3):
        raw = raw_message(
            f'Content-Type: multipart/alternative; boundary="b{n}"',
            body=multipart(f"b{n}", b"\r\nfirst", b"\r\nsecond") + b"--b0\r\n\r\nnot a part\r\n",
        )

        message = parse(raw)

        assert message.text == "first"
        assert [a.part_id for a in message.attachments] == ["2"]


def test_boundary_lines_follow_dovecot_prefix_and_longest_match_rules() -> None:
    # "--outerX" is a delimiter of "outer" (a line need only start with it), and a
    # nested boundary that extends its parent's wins where both match.
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=outer",
        body=(
            b"--outer\r\nContent-Type: multipart/alternative; boundary=outer-inner\r\n\r\n"
            b"--outer-inner\r\n\r\nplain\r\n"
            b"--outer-inner\r\nContent-Type: image/png\r\n\r\npng\r\n"
            b"--outer-inner--\r\n"
            b"--outerX trailing text\r\nContent-Type: application/pdf\r\n\r\npdf\r\n"
            b"--outer--\r\n"
        ),
    )

    message = parse(raw)

    assert message.text == "plain"
    assert [(a.part_id, a.content_type) for a in message.attachments] == [
        ("1.2", "image/png"),
        ("2", "application/pdf"),
    ]


def test_undeclared_8bit_header_is_read_as_cp1252_with_a_defect() -> None:
    message = parse(raw_message(b"Subject: Caf\xe9 cr\xe8me \x93quoted\x94"))

    assert message.subject == "Café crème “quoted”"
    assert any("8-bit" in defect for defect in message.defects)


def test_raw_utf8_header_is_accepted_as_rfc6532() -> None:
    message = parse(raw_message("Subject: Grüße, 東京", "To: Jörg <jörg@example.de>"))

    assert message.subject == "Grüße, 東京"
    assert message.to == (Address("Jörg", "jörg@example.de"),)
    assert not message.malformed, message.defects


def test_unknown_charset_falls_back_to_utf8_with_a_defect() -> None:
    raw = raw_message(
        "Subject: =?x-unknown?q?caf=C3=A9?=",
        "Content-Type: text/plain; charset=x-unknown",
        body="naïve café".encode(),
    )

    message = parse(raw)

    assert message.text == "naïve café"
    assert message.subject == "café"
    assert any("x-unknown" in defect for defect in message.defects)


def test_text_invalid_in_its_charset_falls_back_without_raising() -> None:
    raw = raw_message("Content-Type: text/plain; charset=utf-8", body=b"caf\xe9 \x81 ok")

    message = parse(raw)

    assert message.text == "café \ufffd ok"
    assert any("not valid utf-8" in defect for defect in message.defects)


def test_invalid_base64_is_decoded_best_effort_with_a_defect() -> None:
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=b",
        body=multipart(
            "b",
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\nSGVsbG8g!!d29y*bGQ",
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x#",
        ),
    )

    message = parse(raw)

    assert message.text == "Hello world"
    assert [(a.part_id, a.size) for a in message.attachments] == [("2", len(b"%PDF-1"))]
    assert any("invalid base64" in defect for defect in message.defects)


def test_nul_bytes_are_removed_from_text_and_recorded() -> None:
    raw = raw_message("Subject: nul\x00here", body=b"line one\x00\r\nline two")

    message = parse(raw)

    assert message.text == "line one\r\nline two"
    assert message.subject == "nulhere"
    assert "\x00" not in message.headers
    assert any("NUL" in defect for defect in message.defects)


def test_missing_from_and_date_are_defects() -> None:
    message = parse(b"Subject: hello\r\n\r\nbody")

    assert message.sender is None and message.date is None
    assert message.text == "body"
    assert "no From address" in message.defects
    assert "missing Date header" in message.defects


def test_nesting_beyond_the_servers_limit_becomes_an_opaque_part() -> None:
    raw = b"".join(
        f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
        for level in range(150)
    )

    message = parse(raw)

    [opaque] = message.attachments
    assert opaque.part_id == ".".join(["1"] * 99)
    assert opaque.content_type == "application/octet-stream"
    assert any("nested too deep" in defect for defect in message.defects)


def test_deeply_nested_address_comments_do_not_break_parsing() -> None:
    message = parse(raw_message("To: " + "(" * 5000 + "x@example.com"))

    assert message.to == (Address("", "x@example.com"),)


def test_truncated_message_parses_at_every_cut() -> None:
    raw = make_message(
        subject="=?utf-8?q?caf=C3=A9?=",
        text="body text\n",
        html="<p>body</p>\n",
        attachments=(Attachment("report.pdf", PDF, "application/pdf"),),
    )

    for cut in range(0, len(raw), 97):
        message = parse(raw[:cut])
        assert message.size == cut
    assert parse(raw[: len(raw) // 2]).malformed


def test_random_bytes_never_raise() -> None:
    rng = random.Random(20240101)
    tokens = [
        b"\r\n",
        b"\n",
        b"--b\r\n",
        b"--b--",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"=?utf-8?b?",
        b"?=",
        b"filename*0*=x'y'%E2;",
        b"\x00",
        b"\xff",
        b":",
    ]
    for _ in range(200):
        if rng.random() < 0.5:
            raw = rng.randbytes(rng.randrange(2000))
        else:
            raw = b"".join(rng.choice(tokens) + rng.randbytes(rng.randrange(8)) for _ in range(99))

        message = parse(raw)

        assert isinstance(message, ParsedMessage)
        for text in (message.text, message.html, message.headers, message.subject):
            assert text is None or "\x00" not in text


@pytest.mark.parametrize(
    ("mime", "body", "expected"),
    [
        (b"Content-Transfer-Encoding: base64\r\n\r\n", base64.encodebytes(PDF), PDF),
        (
            b"Content-Transfer-Encoding: Quoted-Printable\r\n\r\n",
            b"caf=C3=A9=\r\n!",
            "café!".encode(),
        ),
        (b"Content-Type: text/plain\r\n\r\n", b"as is\r\n", b"as is\r\n"),
        (
            b"Content-Type: message/rfc822\r\n\r\n",
            b"Subject: x\r\n\r\nbody",
            b"Subject: x\r\n\r\nbody",
        ),
        (b"", base64.encodebytes(PNG), base64.encodebytes(PNG)),
    ],
)
def test_a_fetched_section_decodes_as_its_mime_header_says(
    mime: bytes, body: bytes, expected: bytes
) -> None:
    assert decode_section(mime, body) == expected


def test_flags_are_normalised_to_canonical_system_flags() -> None:
    assert normalise_flags([b"\\SEEN", "\\flagged", b"$Forwarded"]) == {
        "\\Seen",
        "\\Flagged",
        "$Forwarded",
    }
    assert parse_message(make_message(), uid=1, flags=["\\Flagged"]).flagged


# -- hostile headers: every reader is total -------------------------------------------------

GROUPS = "a:" * 1000  # the stdlib's address parser recurses once per ":" group


def stored_text(message: ParsedMessage) -> list[str]:
    """Every text a row or a JSON answer gets from `message`."""
    return [
        message.subject,
        message.text or "",
        message.html or "",
        message.headers,
        *message.defects,
        *(attachment.filename or "" for attachment in message.attachments),
        *(f"{a.name}{a.email}" for a in (*message.to, *message.cc, *message.reply_to)),
    ]


def assert_storable(message: ParsedMessage) -> None:
    for text in stored_text(message):
        assert "\x00" not in text, f"a NUL would be refused by PostgreSQL: {text[:80]!r}"
        text.encode("utf-8")  # a lone surrogate raises: no database or JSON would take it


@pytest.mark.parametrize("header", ["To", "Cc", "Bcc", "Reply-To", "From"])
def test_an_address_header_of_nested_groups_becomes_a_defect_not_an_exception(
    header: str,
) -> None:
    raw = raw_message(
        f"{header}: {GROUPS}",
        "Subject: still readable",
        "Message-ID: <hostile@example.com>",
        body=b"the body survives\r\n",
    )

    message = parse(raw)

    assert message.subject == "still readable"
    assert message.message_id == "<hostile@example.com>"
    assert message.text == "the body survives\r\n"
    field = header.lower()
    assert any(d.startswith(f"{field} address list") for d in message.defects), message.defects
    assert any("RecursionError" in defect for defect in message.defects)
    assert GROUPS in message.headers, "the raw header text is kept"


def test_addresses_among_the_words_of_an_unparseable_list_are_kept() -> None:
    message = parse(raw_message(f"To: {GROUPS} Bob <bob@example.com>, carol@example.com"))

    assert message.to == (Address("", "bob@example.com"), Address("", "carol@example.com"))


def test_a_megabyte_recipient_list_keeps_the_first_thousand_with_a_defect() -> None:
    message = parse(raw_message("To: " + ", ".join(f"u{n}@example.com" for n in range(50_000))))

    assert len(message.to) == 1000
    assert message.to[0] == Address("", "u0@example.com")
    assert any("addresses over the limit dropped" in d for d in message.defects)
    # the stdlib's parser slows down faster than its input grows: the rest is not read
    assert any("list cut at 131072 characters" in d for d in message.defects), message.defects


def test_an_rfc2231_charset_python_cannot_look_up_keeps_the_filename() -> None:
    attachment = (
        b"Content-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=\x00''report%20one.pdf\r\n\r\nPDF\r\n"
    )
    raw = raw_message(
        "Content-Type: multipart/mixed; boundary=b",
        body=multipart("b", b"Content-Type: text/plain\r\n\r\nhello\r\n", attachment),
    )

    message = parse(raw)

    assert message.text == "hello\r\n"
    [found] = message.attachments
    assert (found.filename, found.content_type) == ("report one.pdf", "application/pdf")
    assert any("ValueError" in defect for defect in message.defects), message.defects
    assert_storable(message)
    header, _, body = attachment.partition(b"\r\n\r\n")
    assert decode_section(header + b"\r\n\r\n", body) == b"PDF\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        raw_message("Subject: =?utf-7?q?+2AA-?="),
        raw_message("Content-Type: text/plain; charset=utf-7", body=b"+2AA-\r\n"),
        raw_message("Content-Type: application/x; name*=utf-7''%2B2AA-"),
        raw_message("To: =?utf-7?q?+2AA-?= <a@example.com>"),
    ],
    ids=["encoded word", "body", "RFC 2231 filename", "display name"],
)
def test_utf7_lone_surrogates_are_replaced_so_the_text_can_be_stored(raw: bytes) -> None:
    message = parse(raw)

    assert_storable(message)
    assert any("lone surrogates replaced" in defect for defect in message.defects)


@pytest.mark.parametrize(
    "header",
    ["Date: Fri, 31 Dec 9999 23:59:59 -2359", "Date: 1 Jan 99999999999999999999 00:00 +0000"],
)
def test_a_date_the_database_could_not_give_back_is_none_and_a_defect(header: str) -> None:
    message = parse(raw_message(header))

    assert message.date is None
    assert any(defect.startswith("unparseable Date header") for defect in message.defects)


def test_an_internal_date_the_database_could_not_give_back_is_dropped() -> None:
    far = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-23)))

    message = parse_message(raw_message(), uid=1, internal_date=far)

    assert message.internal_date is None


def test_each_defect_stays_short_however_long_the_input_it_quotes() -> None:
    message = parse(raw_message("Subject: =?" + "x" * 100_000 + "?q?abc?="))

    assert message.defects
    assert max(len(defect) for defect in message.defects) <= 300


def test_a_walk_that_runs_out_of_stack_keeps_the_header_fields_and_says_why() -> None:
    """A deep tree parsed with little stack left (a deep caller): the walk gives up, not the
    message."""
    raw = b"From: a@example.com\r\nSubject: deep\r\n" + b"".join(
        f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
        for level in range(98)
    )
    depth = 0
    frame = sys._getframe()
    while frame.f_back is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 120)
    try:
        message = parse(raw)
    finally:
        sys.setrecursionlimit(limit)

    assert (message.subject, message.sender) == ("deep", Address("", "a@example.com"))
    assert any("body" in d and "RecursionError" in d for d in message.defects), message.defects


@pytest.mark.parametrize("field", ["Content-Type: application/pdf", "Content-Disposition: inline"])
def test_a_megabyte_of_content_parameters_is_cut_after_the_first_16_kb(field: str) -> None:
    """The stdlib's parameter parser took 34 s on 1 MB of ";": it reads 16 kB at most."""
    name, _, value = field.partition(": ")
    header = f'{name}: {value}; name="report.pdf"; filename="report.pdf"' + ";" * 1_000_000
    message = parse(raw_message(header))

    assert [found.filename for found in message.attachments] == ["report.pdf"]
    assert any("Content-* field cut at 16384 characters" in d for d in message.defects)
