"""A hostile server cannot make a session wait forever or allocate what it announces."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import quopri
import random
import time

import pytest

from app.imap import (
    ConnectOptions,
    EmailManager,
    FolderManager,
    ImapConfig,
    ImapConnection,
    connect,
)
from app.imap.errors import ResponseTooLarge, TimedOut
from app.imap.fetch import uid_fetch
from app.imap.transfer import TransferDecoder
from tests.support.dovecot import MailUser
from tests.support.hostile_imap import dripping_proxy, hostile_imap_server
from tests.support.mailgen import Attachment, make_message

OPTIONS = ConnectOptions(
    connect_timeout=5, read_timeout=10, operation_timeout=1.0, allow_private_hosts=True
)


def hostile_config(port: int) -> ImapConfig:
    return ImapConfig(
        host="127.0.0.1", port=port, security="none", username="victim", password="pw"
    )


def test_a_server_dripping_inside_the_read_timeout_runs_out_of_the_operation_deadline() -> None:
    with hostile_imap_server("drip", drip_interval=0.1) as server:
        started = time.monotonic()
        with pytest.raises(TimedOut):
            connect(hostile_config(server.port), OPTIONS)
        waited = time.monotonic() - started
    # Each byte comes 0.1 s after the last, far inside the 10 s read timeout.
    assert waited < 3, f"the session lasted {waited:.1f} s past a 1 s deadline"


def test_a_tls_handshake_dripped_byte_by_byte_runs_out_of_the_operation_deadline(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    options = dataclasses.replace(connect_options, operation_timeout=1.0)
    with dripping_proxy(mail_user.dovecot.tls_port) as port:
        config = ImapConfig(
            host=mail_user.dovecot.host,
            port=port,
            username=mail_user.name,
            password=mail_user.password,
        )
        started = time.monotonic()
        with pytest.raises(TimedOut):
            connect(config, options)
        waited = time.monotonic() - started
    assert waited < 3, f"the handshake went on for {waited:.1f} s past a 1 s deadline"


def test_a_huge_literal_in_a_folder_listing_is_refused_before_it_is_allocated() -> None:
    with hostile_imap_server("literal") as server:
        started = time.monotonic()
        with (
            connect(hostile_config(server.port), OPTIONS) as connection,
            pytest.raises(ResponseTooLarge, match="999999999999"),
        ):
            FolderManager(connection).tree()
        assert time.monotonic() - started < 3, "closing the broken session waited on the server"


def test_a_huge_literal_in_a_fetch_is_refused_before_it_is_allocated() -> None:
    options = ConnectOptions(connect_timeout=5, read_timeout=10, allow_private_hosts=True)
    with (
        hostile_imap_server("literal") as server,
        connect(hostile_config(server.port), options) as connection,
    ):
        EmailManager(connection).select_folder("INBOX")
        with pytest.raises(ResponseTooLarge, match="999999999999"):
            list(uid_fetch(connection.client._imap, [1], [b"BODY.PEEK[]"]))


def test_a_message_over_the_size_limit_is_parsed_from_its_header_with_a_defect(
    mail_user: MailUser, connection: ImapConnection
) -> None:
    big = make_message(subject="big", attachments=(Attachment("a.bin", bytes(200_000)),))
    small = make_message(subject="small")
    uids = [mail_user.append("INBOX", big), mail_user.append("INBOX", small)]
    mail = EmailManager(connection, max_message_bytes=100_000)
    mail.select_folder("INBOX")

    first, second = mail.fetch(uids)

    assert (first.subject, first.size, first.text) == ("big", len(big), None)
    assert any("over the limit" in defect for defect in first.defects), first.defects
    assert [a.filename for a in first.attachments] == ["a.bin"]
    assert second.subject == "small" and second.text is not None and not second.defects


PAYLOAD = random.Random(15).randbytes(5000) + "é = soft\tend \r\n".encode() * 40


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("base64", base64.encodebytes(PAYLOAD)),
        ("quoted-printable", quopri.encodestring(PAYLOAD)),
        ("base64", base64.b64encode(PAYLOAD)),  # one long line, no breaks at all
        ("quoted-printable", b"caf=C3=A9=\r\n!=3D=\r\n" * 300),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64, 1000])
def test_a_part_decoded_in_chunks_equals_the_part_decoded_whole(
    encoding: str, encoded: bytes, chunk_size: int
) -> None:
    decoder = TransferDecoder(encoding)
    pieces = [
        decoder.feed(encoded[start : start + chunk_size])
        for start in range(0, len(encoded), chunk_size)
    ]
    whole = binascii.a2b_base64(encoded) if encoding == "base64" else binascii.a2b_qp(encoded)
    assert b"".join(pieces) + decoder.finish() == whole, f"{chunk_size}-byte chunks differ"
