"""Broken, hostile and huge mail on the server: every message is stored, the sync never stops,
and a 50 MB attachment costs a bounded amount of memory.

The corpus is generated here, on the spot: bad charsets, broken MIME boundaries, raw 8-bit
headers, missing or absurd Message-IDs, megabyte headers, deeply nested message/rfc822,
RFC 2231 filenames, NUL bytes, header-only and blank messages, binary garbage. Each shape
is sent twice, with CRLF and with bare LF line ends, in one MULTIAPPEND. Dovecot refuses a
zero-byte message outright ("Can't save a zero byte message") and stores NUL bytes as 0x80,
so neither reaches a sync from it; the parser's own tests cover both.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlmodel import col, select

from app.config import Settings
from app.db import create_db_engine, session_scope
from app.db.models import Attachment, Email, SyncRunStatus
from app.sync.service import sync_mailbox
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.live_api import LiveApi
from tests.support.snapshot import email_count, server_uids, stored_uids
from tests.support.sync_driver import REPO_ROOT, driver_environment

RECENT = datetime.now(UTC) - timedelta(days=2)
GROUPS = b"a:" * 1000  # the stdlib's address parser recurses once per ":" group
BIG_ATTACHMENT_BYTES = 50 * 1024 * 1024
# Peak RSS a sync may add while it fetches and stores the 50 MB message. The message
# arrives as one IMAP literal (50 MB of base64, about 68 MB), so a few copies are expected;
# holding its decoded body or text in Python strings on top would cross this.
MEMORY_BOUND_BYTES = 400 * 1024 * 1024
NESTED_DEPTH = 10
RFC2231_FILENAME = "€ Rapport d'activité 2024.pdf"

_HEAD = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
)


def _simple(number: int, header: bytes = b"", body: bytes = b"hello\r\n") -> bytes:
    subject = f"Subject: hostile {number}\r\n".encode()
    return _HEAD + subject + header + b"\r\n" + body


def _part(content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"Content-Type: " + content_type + b"\r\n" + extra + b"\r\n" + body + b"\r\n"


def _multipart(boundary: bytes, parts: list[bytes], *, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part for part in parts)
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


def bad_charsets() -> Iterator[bytes]:
    """Bodies and encoded words in charsets that are unknown, wrong or not text at all."""
    labels = [
        "x-unknown", "utf-99", "unicode-escape", "base64", "utf-16", "utf-32", "utf-7",
        "iso-2022-jp", "gb2312", '"utf-8"', "ks_c_5601-1987", "idna", "", "us-ascii",
    ]  # fmt: skip
    bodies = ["Grüße, señor — ¥€".encode("latin-1", "replace"), "日本語のテキスト".encode()]
    for label in labels:
        for body in bodies:
            content_type = f"Content-Type: text/plain; charset={label}\r\n".encode()
            yield _simple(1, content_type, body + b"\r\n")
        word = f"=?{label or 'x'}?B?w6nDqMOg?= =?{label or 'x'}?Q?caf=E9?=".encode()
        yield _simple(2, b"X-Note: " + word + b"\r\n").replace(b"hostile 2", word)


def broken_encoded_words() -> Iterator[bytes]:
    words = [
        b"=?utf-8?B?!!!not base64!!!?=", b"=?utf-8?B?w6k?=", b"=?utf-8?Q?caf=C3=?=",
        b"=?utf-8*fr?Q?ann=C3=A9e?=", b"=?utf-8?X?unknown-encoding?=", b"=?utf-8?B??=",
        b"=?utf-8?Q?" + b"=41" * 5000 + b"?=", b"=?" * 3000, b"=?utf-8?B?w6k=?=" * 2000,
    ]  # fmt: skip
    for word in words:
        yield _HEAD + b"Subject: " + word + b"\r\nFrom: " + word + b" <x@example.com>\r\n\r\nx\r\n"


def broken_boundaries() -> Iterator[bytes]:
    text = _part(b"text/plain", b"first part")
    html = _part(b"text/html", b"<p>second</p>")
    yield _simple(3, b"Content-Type: multipart/mixed\r\n", _multipart(b"b1", [text]))
    yield _simple(4, b'Content-Type: multipart/mixed; boundary="b1"\r\n', b"no parts at all")
    yield _simple(
        5,
        b'Content-Type: multipart/mixed; boundary="b1"\r\n',
        _multipart(b"b1", [text, html], close=False),
    )
    yield _simple(6, b'Content-Type: multipart/mixed; boundary=""\r\n', _multipart(b"", [text]))
    yield _simple(
        7, b"Content-Type: multipart/mixed; boundary*=''b1\r\n", _multipart(b"b1", [text, html])
    )
    long_boundary = b"x" * 5000
    yield _simple(
        8,
        b'Content-Type: multipart/mixed; boundary="' + long_boundary + b'"\r\n',
        _multipart(long_boundary, [text, html]),
    )
    inner = _part(b'multipart/alternative; boundary="b1"', _multipart(b"b1", [text, html]))
    yield _simple(
        9, b'Content-Type: multipart/mixed; boundary="b1"\r\n', _multipart(b"b1", [inner, text])
    )
    yield _simple(
        10,
        b'Content-Type: multipart/mixed; boundary="b1"\r\n',
        b"--b1--\r\n" + _multipart(b"b1", [text]),
    )
    cut_header = b"Content-Type: text/plain\r\nContent-Disp"
    yield _simple(
        11,
        b'Content-Type: multipart/mixed; boundary="b1"\r\n',
        b"--b1\r\n" + cut_header + b"\r\n--b1\r\n" + text + b"--b1",
    )
    many = [_part(b"text/plain", str(n).encode()) for n in range(3000)]
    yield _simple(12, b'Content-Type: multipart/mixed; boundary="m"\r\n', _multipart(b"m", many))
    yield _simple(13, b'Content-Type: multipart/mixed; boundary="b1"\r\n', b"--b1")
    yield _simple(14, b'Content-Type: multipart/mixed; boundary="b1"\r\n', b"--b1\r\n")
    yield _simple(15, b"Content-Type: multipart/\r\n", b"body")
    yield _simple(16, b"Content-Type: ;;;;===\r\n", b"body")


def eight_bit_headers() -> Iterator[bytes]:
    values = [
        "Jörg Müller".encode("latin-1"), "Jörg Müller".encode(), "Ça “va”".encode("cp1252"),
        bytes(range(0x80, 0x100)), "Кириллица".encode("koi8-r"),
    ]  # fmt: skip
    for value in values:
        yield _HEAD + b"Subject: " + value + b"\r\n\r\nbody\r\n"
        yield b"From: " + value + b" <a@example.com>\r\nTo: " + value + b" <b@example.com>\r\n\r\nx"
        yield b"Subject: x\r\nX-" + value + b": header name in 8 bit\r\n\r\nx\r\n"
        yield b"Subject: x\r\nContent-Type: text/plain; name=" + value + b"\r\n\r\nx\r\n"


def odd_message_ids() -> Iterator[bytes]:
    ids = [
        b"", b"<>", b"no-brackets@example.com", b"<a@example.com> <b@example.com>",
        b"<" + b"x" * 20_000 + b"@example.com>",
        b"<with space@example.com>", "<ünïcode@exämple.com>".encode(), b"<<<>>>",
    ]  # fmt: skip
    for number, message_id in enumerate(ids):
        yield _simple(number, b"Message-ID: " + message_id + b"\r\n")
        yield _simple(number, b"In-Reply-To: " + message_id + b"\r\nReferences: " + message_id)
    yield _simple(0)  # no Message-ID at all, twice: two distinct messages
    yield _simple(0)


def huge_headers() -> Iterator[bytes]:
    """Headers of about a megabyte each: one line, many lines, a subject, an address list."""
    yield _simple(20, b"X-Long: " + b"a" * 1_000_000 + b"\r\n")
    yield _simple(21, b"".join(b"Received: from h%d by relay\r\n" % n for n in range(35_000)))
    yield _HEAD + b"Subject: " + b"subject " * 125_000 + b"\r\n\r\nbody\r\n"
    addresses = b", ".join(b"Person %d <p%d@example.com>" % (n, n) for n in range(30_000))
    yield b"From: a@example.com\r\nTo: " + addresses + b"\r\nCc: " + addresses + b"\r\n\r\nx\r\n"
    folded = b"\r\n ".join([b"word"] * 200_000)
    yield _simple(22, b"X-Folded: " + folded + b"\r\n")


def nested(depth: int) -> bytes:
    """A message that forwards a message that forwards... `depth` levels deep."""
    message = _simple(depth, b"Content-Type: text/plain\r\n", b"the innermost text")
    for level in range(depth - 1, -1, -1):
        message = _simple(
            level,
            b'Content-Type: multipart/mixed; boundary="n%d"\r\n' % level,
            _multipart(
                b"n%d" % level,
                [
                    _part(b"text/plain", b"level %d" % level),
                    _part(b"message/rfc822", message),
                ],
            ),
        )
    return message


def nested_messages() -> Iterator[bytes]:
    for depth in (1, 2, NESTED_DEPTH, 25, 32):
        yield nested(depth)
    yield _simple(30, b"Content-Type: message/rfc822\r\n", b"not a message at all")
    yield _simple(31, b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n")


def rfc2231_filenames() -> Iterator[bytes]:
    dispositions = [
        b"attachment; filename*=UTF-8''%E2%82%AC%20Rapport%20d'activit%C3%A9%202024.pdf",
        b"attachment; filename*0*=UTF-8''%E2%82%AC%20Rapport%20d;"
        b" filename*1*='activit%C3%A9%202024.pdf",
        b"attachment; filename*=iso-8859-1'fr'r%E9sum%E9.txt",
        b"attachment; filename*=x-unknown''%FF%FE.bin",
        b"attachment; filename*=UTF-8''%ZZ%%%.bin",
        b"attachment; filename*0=a; filename*5=b; filename*99999999999=c",
        b'attachment; filename="=?utf-8?B?w6nDqMOgLnR4dA==?="',
        b'attachment; filename="../../etc/passwd"',
        b'attachment; filename="' + b"x" * 10_000 + b'.txt"',
        b"attachment; filename*=''",
        b'attachment; filename="a%00b.txt"; name="\x01\x02"',
    ]
    for disposition in dispositions:
        attachment = _part(
            b"application/pdf", b"JVBERi0xLjQK", b"Content-Disposition: " + disposition + b"\r\n"
        )
        yield _simple(
            40,
            b'Content-Type: multipart/mixed; boundary="f"\r\n',
            _multipart(b"f", [_part(b"text/plain", b"see attached"), attachment]),
        )


def nul_bytes() -> Iterator[bytes]:
    yield _simple(50, b"X-Nul: a\x00b\r\n", b"body \x00 with NUL\r\n")
    yield _HEAD + b"Subject: \x00\x00\x00\r\n\r\n\x00"
    yield b"\x00" * 100
    yield _simple(51, b'Content-Type: text/plain; charset="utf-8\x00"\r\n', b"\x00")


def odd_dates_and_addresses() -> Iterator[bytes]:
    dates = [
        b"yesterday", b"Mon, 32 Jan 2024 25:61:61 +0000", b"Mon, 1 Jan 0 00:00:00 +0000",
        b"Mon, 1 Jan 99999 00:00:00 +0000", b"Mon, 1 Jan 2024 00:00:00 +9999", b"",
    ]  # fmt: skip
    for date in dates:
        yield b"From: a@example.com\r\nDate: " + date + b"\r\nSubject: date\r\n\r\nx\r\n"
    addresses = [
        b"<unterminated@example.com", b"(" * 5000 + b"a@example.com" + b")" * 5000,
        b"group: a@example.com, b@example.com;", b"undisclosed-recipients:;", b"@@@,,,<>",
        b'"quoted, name" <q@example.com>',
        b"\"\\\" <x@example.com>",
    ]  # fmt: skip
    for address in addresses:
        yield b"From: " + address + b"\r\nTo: " + address + b"\r\nSubject: a\r\n\r\nx\r\n"


def bad_transfer_encodings() -> Iterator[bytes]:
    bodies = [
        (b"base64", b"!!!! not base64 at all ===="),
        (b"base64", b"SGVsbG8=SGVsbG8="),
        (b"base64", b"SGVsbG8"),
        (b"quoted-printable", b"caf=E9 =ZZ =\r\nsoft break =3"),
        (b"x-uuencode", b"begin 644 a\r\n#86)C\r\n`\r\nend"),
        (b"7bit", "8-bit text in a 7bit part: é".encode()),
        (b"", b"empty encoding"),
    ]
    for encoding, body in bodies:
        headers = b"Content-Transfer-Encoding: " + encoding + b"\r\n"
        yield _simple(60, headers, body)
        attachment = _part(b"application/octet-stream", body, headers)
        yield _simple(
            61,
            b'Content-Type: multipart/mixed; boundary="t"\r\n',
            _multipart(b"t", [_part(b"text/plain", b"x"), attachment]),
        )


def odd_shapes() -> Iterator[bytes]:
    yield b"Subject: header only, no blank line, no body\r\n"
    yield b"\r\n"  # the smallest message Dovecot stores: an empty header and body
    yield b"just a body without any header\r\n"
    yield b"Subject: bare CR line ends\rFrom: a@example.com\r\rbody\r"
    yield b": no field name\r\n::::\r\n \r\n\tcontinuation first\r\n\r\n"
    yield b"Subject: no final line break"


def binary_garbage(count: int) -> Iterator[bytes]:
    rng = random.Random(2024)
    for _ in range(count):
        yield rng.randbytes(rng.randrange(1, 64 * 1024))


def hostile_corpus() -> list[bytes]:
    """Every shape in CRLF and in bare-LF form, plus random garbage."""
    shapes = [
        *bad_charsets(),
        *broken_encoded_words(),
        *broken_boundaries(),
        *eight_bit_headers(),
        *odd_message_ids(),
        *huge_headers(),
        *nested_messages(),
        *rfc2231_filenames(),
        *nul_bytes(),
        *odd_dates_and_addresses(),
        *bad_transfer_encodings(),
        *odd_shapes(),
    ]
    bare_lf = [shape.replace(b"\r\n", b"\n") for shape in shapes]
    return [*shapes, *bare_lf, *binary_garbage(30)]


def big_attachment_message() -> bytes:
    """A message with a 50 MB attachment, base64 in 76-character lines, as mailers send it."""
    payload = bytes(range(256)) * (BIG_ATTACHMENT_BYTES // 256)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    attachment = _part(
        b"application/octet-stream",
        encoded,
        b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="big.bin"'
        b"\r\n",
    )
    return _simple(
        99,
        b'Message-ID: <big@example.com>\r\nContent-Type: multipart/mixed; boundary="big"\r\n',
        _multipart(b"big", [_part(b"text/plain", b"the big one"), attachment]),
    )


def append_all(user: MailUser, messages: list[bytes]) -> None:
    """Store `messages` in INBOX in one MULTIAPPEND (RFC 3502)."""
    client = user.client()
    try:
        client.multiappend(
            "INBOX",
            [
                {"msg": message, "date": RECENT + timedelta(seconds=n)}
                for n, message in enumerate(messages)
            ],
        )
    finally:
        client.logout()


def sync_until_complete(engine: Engine, settings: Settings, mailbox_id: int) -> int:
    """Run syncs until one completes; every run must succeed. Return how many ran."""
    runs = 0
    while True:
        result = sync_mailbox(engine, mailbox_id, settings)
        runs += 1
        assert result is not None
        assert result.status is SyncRunStatus.SUCCEEDED, result.error_code
        if result.complete:
            return runs
        assert runs < 20, "the sync does not converge"


def attachments_named(engine: Engine, mailbox_id: int, filename: str) -> list[Attachment]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Attachment)
                .join(Email, col(Email.id) == Attachment.email_id)
                .where(Email.mailbox_id == mailbox_id, Attachment.filename == filename)
            ).all()
        )


def test_every_hostile_message_is_stored_and_the_sync_never_stops(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    corpus = hostile_corpus()
    assert len(corpus) >= 200
    append_all(mail_user, corpus)
    mailbox_id = add_mailbox(mail_user)

    sync_until_complete(engine, settings, mailbox_id)

    server = server_uids(mail_user, ["INBOX"])
    assert len(server["INBOX"]) == len(corpus)
    assert stored_uids(engine, mailbox_id) == server
    assert email_count(engine, mailbox_id) == len(corpus)
    # What a CRM user would look for in the broken mail survives it.
    assert len(attachments_named(engine, mailbox_id, RFC2231_FILENAME)) == 4  # 2 forms x CRLF/LF
    nested_eml = attachments_named(engine, mailbox_id, "hostile 1.eml")
    assert nested_eml, "a forwarded message is an attachment"
    # A second run finds nothing new: the corpus does not make the sync loop or re-store.
    assert sync_mailbox(engine, mailbox_id, settings) is not None
    assert email_count(engine, mailbox_id) == len(corpus)


def measured_sync(mailbox_id: int) -> None:
    """Sync in this (fresh) process and print the run and its peak RSS growth, as JSON.

    Run as a child by the test: the growth is the kernel's high-water mark (VmHWM)
    minus the resident size once the imports are done. A child's rusage would not
    do: its maximum still counts the pages of the parent it was forked from.
    """
    settings = Settings()
    engine = create_db_engine(settings.database_url)
    baseline = _status_bytes("VmRSS")
    result = sync_mailbox(engine, mailbox_id, settings)
    peak = _status_bytes("VmHWM")
    engine.dispose()
    assert result is not None
    report = {"status": str(result.status), "complete": result.complete}
    print(json.dumps({**report, "peak_growth": peak - baseline}))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def sync_in_child(settings: Settings, mailbox_id: int) -> dict[str, Any]:
    code = f"from {__name__} import measured_sync; measured_sync({mailbox_id})"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=driver_environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_a_50_mb_attachment_is_stored_with_bounded_memory(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    append_all(mail_user, [big_attachment_message(), _simple(100), _simple(101)])
    mailbox_id = add_mailbox(mail_user)

    report = sync_in_child(settings, mailbox_id)

    assert (report["status"], report["complete"]) == ("succeeded", True)
    assert email_count(engine, mailbox_id) == 3
    [big] = attachments_named(engine, mailbox_id, "big.bin")
    assert big.size == BIG_ATTACHMENT_BYTES
    print(f"peak RSS growth syncing a 50 MB attachment: {report['peak_growth'] / 2**20:.0f} MiB")
    assert report["peak_growth"] < MEMORY_BOUND_BYTES


POSTGRESQL_BREAKERS = [
    b"From: x@" + b"y" * 400 + b".example\r\nSubject: a\r\n\r\nx\r\n",
    b"From: " + b"a" * 2000 + b"@example.com\r\nSubject: a\r\n\r\nx\r\n",
    b"From: a@example.com\r\nMessage-ID: <"
    + bytes(random.Random(7).choices(b"abcdefghijklmnopqrstuvwxyz0123456789", k=5000))
    + b"@example.com>\r\n\r\nx\r\n",
    nested(33),
]


def test_values_too_long_for_an_index_or_column_are_still_stored(
    engine: Engine, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    append_all(mail_user, POSTGRESQL_BREAKERS)
    mailbox_id = add_mailbox(mail_user)
    sync_until_complete(engine, settings, mailbox_id)
    assert email_count(engine, mailbox_id) == len(POSTGRESQL_BREAKERS)


# Messages that each stopped a mailbox for good: the parser raised (or stored text or a date
# the database refuses or cannot give back), the run failed, and the next run, newest first,
# met the same message. Keyed by what the email's defects then say.
MAILBOX_STOPPERS = {
    "to address list": b"To: " + GROUPS + b"\r\n",
    "cc address list": b"Cc: " + GROUPS + b"\r\n",
    "bcc address list": b"Bcc: " + GROUPS + b"\r\n",
    "reply-to address list": b"Reply-To: " + GROUPS + b"\r\n",
    "from address list": b"Sender: x@example.com\r\nFrom: " + GROUPS + b"\r\n",
    "part 2 RFC 2231 parameter": b'Content-Type: multipart/mixed; boundary="s"\r\n',
    "subject: lone surrogates": b"Subject: utf-7 =?utf-7?q?+2AA-?=\r\n",
    "part 1: lone surrogates": b"Content-Type: text/plain; charset=utf-7\r\n",
    "unparseable Date header": b"Date: Fri, 31 Dec 9999 23:59:59 -2359\r\n",
}
_STOPPER_BODIES = {
    "part 2 RFC 2231 parameter": _multipart(
        b"s",
        [
            _part(b"text/plain", b"see the attachment"),
            _part(
                b"application/pdf",
                b"PDF",
                b"Content-Disposition: attachment; filename*=undefined''report.pdf\r\n",
            ),
        ],
    ),
    "part 1: lone surrogates": b"+2AA-\r\n",
}


def stopper(defect: str) -> bytes:
    """A message whose own header comes first, so it wins over the usual ones of that name."""
    message_id = f"Message-ID: <stopper-{defect.replace(' ', '-')}@example.com>\r\n".encode()
    own = MAILBOX_STOPPERS[defect] + message_id
    return own + _simple(200, body=_STOPPER_BODIES.get(defect, b"hello\r\n"))


def normal(number: int) -> bytes:
    return _simple(number, f"Message-ID: <normal-{number}@example.com>\r\n".encode())


def test_messages_that_stopped_a_mailbox_are_stored_with_their_defects_between_normal_mail(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    live_api: LiveApi,
) -> None:
    messages = [normal(0)]
    for number, defect in enumerate(MAILBOX_STOPPERS, start=1):
        messages += [stopper(defect), normal(number)]
    append_all(mail_user, messages)
    mailbox_id = add_mailbox(mail_user)

    sync_until_complete(engine, settings, mailbox_id)

    assert stored_uids(engine, mailbox_id) == server_uids(mail_user, ["INBOX"])
    listed = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/emails", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    by_message_id = {item["message_id"]: item["id"] for item in listed.json()["items"]}
    for number in range(len(MAILBOX_STOPPERS) + 1):
        email = live_api.client.get(f"/v1/emails/{by_message_id[f'<normal-{number}@example.com>']}")
        assert email.status_code == 200, email.text
        assert (email.json()["subject"], email.json()["defects"]) == (f"hostile {number}", [])
    for defect in MAILBOX_STOPPERS:
        message_id = f"<stopper-{defect.replace(' ', '-')}@example.com>"
        assert message_id in by_message_id, f"the message with a {defect!r} problem is missing"
        email = live_api.client.get(f"/v1/emails/{by_message_id[message_id]}")
        assert email.status_code == 200, email.text
        found = email.json()["defects"]
        assert any(line.startswith(defect) for line in found), f"{defect!r} not in {found}"

    again = sync_mailbox(engine, mailbox_id, settings)
    assert again is not None
    assert (again.status, again.counts.new) == (SyncRunStatus.SUCCEEDED, 0), again.error_code
    assert email_count(engine, mailbox_id) == len(messages)


REFUSED_SUBJECT = "refused by the database"
_REFUSING_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER refuse_one BEFORE INSERT ON email "
        f"WHEN NEW.subject LIKE '%{REFUSED_SUBJECT}%' "
        "BEGIN SELECT RAISE(ABORT, 'this value is refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_one() RETURNS trigger AS $$ BEGIN "
        f"IF NEW.subject LIKE '%{REFUSED_SUBJECT}%' THEN "
        "RAISE EXCEPTION 'this value is refused' USING ERRCODE = 'data_exception'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_one BEFORE INSERT ON email "
        "FOR EACH ROW EXECUTE FUNCTION refuse_one()",
    ],
}


def refuse_one_subject(engine: Engine) -> None:
    """Make the database refuse one value, as it refuses whatever no parser foresaw."""
    with engine.begin() as connection:
        for statement in _REFUSING_TRIGGER[engine.dialect.name]:
            connection.execute(text(statement))


def test_a_message_the_database_refuses_is_stored_without_its_content_and_the_sync_goes_on(
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
    live_api: LiveApi,
) -> None:
    refused = _simple(1, b"Message-ID: <refused@example.com>\r\n").replace(
        b"hostile 1", REFUSED_SUBJECT.encode()
    )
    append_all(mail_user, [normal(0), refused, normal(2)])
    mailbox_id = add_mailbox(mail_user)
    refuse_one_subject(engine)

    sync_until_complete(engine, settings, mailbox_id)

    assert stored_uids(engine, mailbox_id) == server_uids(mail_user, ["INBOX"])
    listed = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/emails")
    assert listed.status_code == 200, listed.text
    by_message_id = {item["message_id"]: item for item in listed.json()["items"]}
    assert by_message_id["<normal-0@example.com>"]["subject"] == "hostile 0"
    assert by_message_id["<normal-2@example.com>"]["subject"] == "hostile 2"
    kept = live_api.client.get(f"/v1/emails/{by_message_id['<refused@example.com>']['id']}").json()
    assert (kept["subject"], kept["text"], kept["size"] > 0) == ("", None, True)
    assert any("the database refused the message" in line for line in kept["defects"]), kept

    again = sync_mailbox(engine, mailbox_id, settings)
    assert again is not None
    assert (again.status, again.counts.new) == (SyncRunStatus.SUCCEEDED, 0), again.error_code
    assert email_count(engine, mailbox_id) == 3
