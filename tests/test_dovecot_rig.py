"""Prove the test Dovecot behaves like the server the other tests assume."""

from __future__ import annotations

import ssl
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.support.dovecot import SPECIAL_USE_FOLDERS, Dovecot, DovecotInstances, MailUser
from tests.support.mailgen import make_message


def _verifying_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def test_implicit_tls_login_verifies_against_the_test_ca(
    dovecot: Dovecot, mail_user: MailUser
) -> None:
    context = _verifying_context(dovecot.ca_file)
    with IMAPClient(dovecot.host, port=dovecot.tls_port, ssl_context=context, timeout=5) as client:
        client.login(mail_user.name, mail_user.password)
        assert client.noop()


def test_server_certificate_is_not_signed_by_the_other_ca(dovecot: Dovecot) -> None:
    context = _verifying_context(dovecot.other_ca_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(dovecot.host, port=dovecot.tls_port, ssl_context=context, timeout=5)


def test_starttls_upgrades_the_plain_port(dovecot: Dovecot, mail_user: MailUser) -> None:
    with IMAPClient(dovecot.host, port=dovecot.plain_port, ssl=False, timeout=5) as client:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(_verifying_context(dovecot.ca_file))
        client.login(mail_user.name, mail_user.password)
        assert isinstance(client.socket(), ssl.SSLSocket)


def test_default_instance_advertises_the_extensions_the_sync_uses(mail_user: MailUser) -> None:
    with mail_user.client() as client:
        capabilities = set(client.capabilities())
    assert {
        b"CONDSTORE",
        b"QRESYNC",
        b"SPECIAL-USE",
        b"MOVE",
        b"UIDPLUS",
        b"UNSELECT",
    } <= capabilities


def test_legacy_instance_advertises_neither_condstore_nor_unselect(
    legacy_dovecot: Dovecot,
) -> None:
    user = legacy_dovecot.add_user()
    with user.client() as client:
        capabilities = set(client.capabilities())
    assert {b"SPECIAL-USE", b"LIST-STATUS", b"MOVE"} <= capabilities
    assert not {b"CONDSTORE", b"QRESYNC", b"UNSELECT"} & capabilities


def test_instance_without_starttls_keeps_implicit_tls(dovecot_instances: DovecotInstances) -> None:
    server = dovecot_instances.get(starttls=False)
    user = server.add_user()
    with IMAPClient(server.host, port=server.plain_port, ssl=False, timeout=5) as client:
        assert b"STARTTLS" not in client.capabilities()
    context = _verifying_context(server.ca_file)
    with IMAPClient(server.host, port=server.tls_port, ssl_context=context, timeout=5) as client:
        client.login(user.name, user.password)


def test_new_user_has_the_special_use_folders(mail_user: MailUser) -> None:
    with mail_user.client() as client:
        listed = {name: set(flags) for flags, _, name in client.list_folders()}
    assert listed.keys() == {"INBOX", *SPECIAL_USE_FOLDERS}
    for name, use in SPECIAL_USE_FOLDERS.items():
        assert use.encode() in listed[name]


def test_append_returns_the_uids_that_uids_lists(mail_user: MailUser) -> None:
    received = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    first = mail_user.append("INBOX", make_message(subject="one"), flags=["\\Seen"], date=received)
    second = mail_user.append("INBOX", make_message(subject="two"))

    assert second > first
    assert mail_user.uids("INBOX") == [first, second]
    assert mail_user.flags("INBOX") == {first: {"\\Seen"}, second: set()}
    with mail_user.client() as client:
        client.select_folder("INBOX", readonly=True)
        dates = client.fetch([first], ["INTERNALDATE"])
    assert dates[first][b"INTERNALDATE"].astimezone(UTC) == received


def test_flag_changes_are_visible(mail_user: MailUser) -> None:
    uid = mail_user.append("INBOX", make_message())
    mail_user.add_flags("INBOX", [uid], ["\\Flagged", "$Label1"])
    assert mail_user.flags("INBOX")[uid] == {"\\Flagged", "$Label1"}
    mail_user.remove_flags("INBOX", [uid], ["\\Flagged"])
    assert mail_user.flags("INBOX")[uid] == {"$Label1"}


def test_move_copy_and_expunge_report_and_apply_uids(mail_user: MailUser) -> None:
    first, second, third = (mail_user.append("INBOX", make_message()) for _ in range(3))

    copied = mail_user.copy("INBOX", [second], "Archive")
    moved = mail_user.move("INBOX", [third, first], "Archive")
    assert mail_user.uids("INBOX") == [second]
    assert sorted([*copied, *moved]) == mail_user.uids("Archive")
    assert moved[0] > moved[1] > copied[0]  # new UIDs follow the order asked for

    mail_user.expunge("INBOX", [second])
    assert mail_user.uids("INBOX") == []


def test_folders_can_be_created_renamed_and_deleted(mail_user: MailUser) -> None:
    mail_user.create_folder("Projects/Größe")
    uid = mail_user.append("Projects/Größe", make_message())
    mail_user.rename_folder("Projects/Größe", "Projects/Size")
    assert mail_user.uids("Projects/Size") == [uid]
    mail_user.delete_folder("Projects/Size")
    with mail_user.client() as client:
        assert not client.folder_exists("Projects/Size")
        assert client.folder_exists("Projects")


def test_set_uidvalidity_is_seen_by_a_fresh_select(mail_user: MailUser) -> None:
    mail_user.append("INBOX", make_message())
    before = mail_user.uidvalidity("INBOX")
    mail_user.set_uidvalidity("INBOX", before + 1000)
    with mail_user.client() as client:
        assert client.select_folder("INBOX")[b"UIDVALIDITY"] == before + 1000


def test_kick_drops_open_sessions(mail_user: MailUser) -> None:
    client = mail_user.client()
    client.select_folder("INBOX")
    mail_user.kick()
    with pytest.raises((IMAPClient.AbortError, ConnectionError)):  # EOF or reset, by timing
        client.noop()
    client.shutdown()


def test_set_password_replaces_the_old_one(dovecot: Dovecot, mail_user: MailUser) -> None:
    old_password = mail_user.password
    mail_user.set_password("a-new-password")
    with (
        IMAPClient(dovecot.host, port=dovecot.plain_port, ssl=False, timeout=5) as client,
        pytest.raises(LoginError),
    ):
        client.login(mail_user.name, old_password)
    with mail_user.client() as client:
        assert client.noop()


def test_wrong_passwords_fail_fast_without_penalty(dovecot: Dovecot, mail_user: MailUser) -> None:
    for _ in range(3):
        started = time.monotonic()
        with (
            IMAPClient(dovecot.host, port=dovecot.plain_port, ssl=False, timeout=5) as client,
            pytest.raises(LoginError),
        ):
            client.login(mail_user.name, "wrong-password")
        assert time.monotonic() - started < 1.0
    started = time.monotonic()
    with mail_user.client():
        assert time.monotonic() - started < 1.0


def test_doveadm_talks_to_this_instance(dovecot: Dovecot, mail_user: MailUser) -> None:
    home = dovecot.doveadm("user", "-f", "home", mail_user.name).strip()
    assert home == str(dovecot.config.homes_dir / mail_user.name)
