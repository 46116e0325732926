"""The connector against the real test Dovecot: every way in, every way to fail."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
from pydantic import ValidationError

from app.imap import connect
from app.imap.config import ConnectOptions, ImapConfig
from app.imap.errors import (
    AuthenticationFailed,
    BlockedHost,
    TimedOut,
    TlsFailed,
    Unreachable,
)
from tests.support.dovecot import Dovecot, DovecotInstances, MailUser
from tests.support.imap_config import config_for
from tests.support.login_catcher import login_catcher
from tests.support.secret_watch import SecretKind, register_secret


def test_login_over_implicit_tls(mail_user: MailUser, connect_options: ConnectOptions) -> None:
    with connect(config_for(mail_user), connect_options) as connection:
        assert connection.has("IMAP4REV1")
        assert connection.has("QRESYNC")


def test_login_over_starttls(mail_user: MailUser, connect_options: ConnectOptions) -> None:
    config = config_for(mail_user, port=mail_user.dovecot.plain_port, security="starttls")
    with connect(config, connect_options) as connection:
        assert connection.client.socket().version() in {"TLSv1.2", "TLSv1.3"}


def test_login_in_plain_text_when_asked(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    config = config_for(mail_user, port=mail_user.dovecot.plain_port, security="none")
    with connect(config, connect_options) as connection:
        assert not hasattr(connection.client.socket(), "version")


def test_wrong_password_is_authentication_failed_and_fast(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    wrong = register_secret(SecretKind.IMAP_PASSWORD, "not-the-password", "wrong")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as raised:
        connect(config_for(mail_user, password=wrong), connect_options)
    assert time.monotonic() - started < 2
    assert "not-the-password" not in str(raised.value)


def test_non_ascii_credentials_log_in_through_authenticate_plain(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    """LOGIN takes ASCII only; a password like this one used to end in a 500."""
    password = register_secret(SecretKind.IMAP_PASSWORD, "pässwörd-€-" + mail_user.password)
    mail_user.set_password(password)
    with connect(config_for(mail_user, password=password), connect_options) as connection:
        assert connection.has("IMAP4REV1")


def test_non_ascii_credentials_are_refused_unsent_without_authenticate_plain(
    connect_options: ConnectOptions,
) -> None:
    password = register_secret(SecretKind.IMAP_PASSWORD, "pässwörd-never-sent")
    with login_catcher(capabilities=b"IMAP4rev1 AUTH=LOGIN") as server:
        config = ImapConfig(
            host="127.0.0.1", port=server.port, security="none", username="u", password=password
        )
        with pytest.raises(AuthenticationFailed, match="AUTHENTICATE PLAIN"):
            connect(config, connect_options)
    assert b"never-sent" not in server.heard()
    assert b"LOGIN" not in server.heard().upper()


def test_certificate_from_another_ca_is_tls_failed(
    mail_user: MailUser, connect_options: ConnectOptions, dovecot: Dovecot
) -> None:
    options = dataclasses.replace(connect_options, ca_file=dovecot.other_ca_file)
    with pytest.raises(TlsFailed):
        connect(config_for(mail_user), options)
    starttls = config_for(mail_user, port=dovecot.plain_port, security="starttls")
    with pytest.raises(TlsFailed):
        connect(starttls, options)


def test_verification_off_is_an_explicit_choice(
    mail_user: MailUser, connect_options: ConnectOptions, dovecot: Dovecot
) -> None:
    options = dataclasses.replace(connect_options, ca_file=dovecot.other_ca_file)
    with connect(config_for(mail_user, tls_verify=False), options) as connection:
        assert connection.has("IMAP4REV1")


def test_system_trust_store_does_not_trust_the_test_ca(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    with pytest.raises(TlsFailed):
        connect(config_for(mail_user), dataclasses.replace(connect_options, ca_file=None))


def test_starttls_is_refused_when_the_server_does_not_offer_it(
    dovecot_instances: DovecotInstances, connect_options: ConnectOptions
) -> None:
    server = dovecot_instances.get(starttls=False)
    user = server.add_user()
    config = config_for(user, port=server.plain_port, security="starttls")
    with pytest.raises(TlsFailed, match="STARTTLS"):
        connect(config, connect_options)


def test_closed_port_is_unreachable(mail_user: MailUser, connect_options: ConnectOptions) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(Unreachable):
        connect(config_for(mail_user, port=closed_port), connect_options)


def test_silent_server_times_out_within_the_timeout(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    options = dataclasses.replace(connect_options, connect_timeout=0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the TCP handshake, never says a word
        started = time.monotonic()
        with pytest.raises(TimedOut):
            connect(config_for(mail_user, port=silent.getsockname()[1]), options)
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1", "2130706433", "0x7f000001"])
def test_loopback_hosts_are_blocked_unless_allowed(
    mail_user: MailUser, connect_options: ConnectOptions, host: str
) -> None:
    guarded = dataclasses.replace(connect_options, allow_private_hosts=False)
    config = config_for(mail_user, host=host, tls_verify=False)
    with pytest.raises(BlockedHost):
        connect(config, guarded)
    with connect(config, connect_options) as connection:
        assert connection.has("IMAP4REV1")


def test_commands_are_counted(mail_user: MailUser, connect_options: ConnectOptions) -> None:
    with connect(config_for(mail_user), connect_options) as connection:
        before = connection.commands_sent
        connection.client.noop()
        assert connection.commands_sent == before + 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", 70000),
        ("security", "tls"),
        ("host", "imap://mail.example.com"),
        ("host", "mail example.com"),
        ("host", "-mail.example.com"),
        ("host", "mail-.example.com"),
        ("host", "mail..example.com"),
        ("host", "a" * 64 + ".example.com"),
        ("host", "fe80::1%eth0"),
        ("host", "1:2"),
        ("username", ""),
        ("username", "user\r\nA1 LOGOUT"),
        ("username", "user\n"),
        ("username", "user\r"),
        ("username", "user\x00"),
        ("username", "user\x01auth=Bearer other\x01"),
        ("username", "user\x7f"),
        ("password", "secret\r\nA1 LOGOUT"),
        ("password", "secret\x00"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    values: dict[str, object] = {"host": "mail.example.com", "username": "u", "password": "p"}
    values[field] = value
    with pytest.raises(ValidationError) as raised:
        ImapConfig.model_validate(values)
    assert raised.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("host", "read_as"),
    [
        ("Mail.Example.COM", "mail.example.com"),
        ("mail.example.com.", "mail.example.com."),
        ("my_host.internal", "my_host.internal"),
        ("a" * 63 + ".example.com", "a" * 63 + ".example.com"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("127.1", "127.1"),
        ("0x7f000001", "0x7f000001"),
        ("192.0.2.1", "192.0.2.1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ],
)
def test_host_names_and_ip_literals_are_accepted(host: str, read_as: str) -> None:
    assert ImapConfig(host=host, username="u", password="p").host == read_as


def test_exactly_one_credential_is_required() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ImapConfig(host="mail.example.com", username="u")
    with pytest.raises(ValidationError, match="exactly one"):
        ImapConfig.model_validate(
            {"host": "mail.example.com", "username": "u", "password": "p", "access_token": "t"}
        )


def test_secrets_never_show_in_the_config_repr() -> None:
    config = ImapConfig(host="mail.example.com", username="u", password="hunter2")
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.model_dump())
