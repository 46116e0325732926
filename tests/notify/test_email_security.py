"""The mail channel's STARTTLS, implicit TLS and AUTH against a real aiosmtpd on loopback.

The service verifies the SMTP server with the default trust store
(`ssl.create_default_context`), which OpenSSL reads from `SSL_CERT_FILE`; the
tests point that at a CA made here, as an operator with a private CA would.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.db.models import DeliveryState
from app.demo.certificates import CertificateAuthority, certificate_pem, private_key_pem
from app.notify.dispatcher import dispatch_due
from app.security import SecretBox
from tests.support.dovecot import CERTIFICATE_VALIDITY
from tests.support.outbox import email_delivery, mail_a_credential_failure
from tests.support.secret_watch import SecretKind, register_secret
from tests.support.ssrf import resolve_name

HOST = "127.0.0.1"
SMTP_USER = "bridge@crm.test"
# every character URL-quoting changes
SMTP_PASSWORD = register_secret(SecretKind.SMTP_PASSWORD, "s3cret/p@ss:w%rd", "the relay's")


@dataclass(frozen=True)
class ServerCertificates:
    """A CA the service is told to trust, and server contexts signed by it or by a stranger."""

    trusted_ca_file: Path
    trusted: ssl.SSLContext
    untrusted: ssl.SSLContext


def _server_context(ca: CertificateAuthority, directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = ca.issue_server_certificate(key, HOST, "localhost")
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(certificate_pem(certificate))
    key_file.write_bytes(private_key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> ServerCertificates:
    trusted_ca = CertificateAuthority("imap-bridge SMTP test CA", CERTIFICATE_VALIDITY)
    stranger_ca = CertificateAuthority("imap-bridge SMTP stranger CA", CERTIFICATE_VALIDITY)
    trusted_dir = tmp_path_factory.mktemp("smtp-trusted")
    ca_file = trusted_dir / "ca.pem"
    ca_file.write_bytes(certificate_pem(trusted_ca.certificate))
    return ServerCertificates(
        trusted_ca_file=ca_file,
        trusted=_server_context(trusted_ca, trusted_dir),
        untrusted=_server_context(stranger_ca, tmp_path_factory.mktemp("smtp-untrusted")),
    )


@pytest.fixture(autouse=True)
def trust_test_ca(monkeypatch: pytest.MonkeyPatch, certificates: ServerCertificates) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.trusted_ca_file))


@dataclass(frozen=True)
class Received:
    """One accepted message and how it came in."""

    recipients: list[str]
    tls_version: str | None
    login: str


class SubmissionServer:
    """An aiosmtpd handler and authenticator that knows one user and keeps what it accepts."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.mechanisms_tried: list[str] = []

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.mechanisms_tried.append(mechanism)
        valid = auth_data == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=valid, handled=False, auth_data=auth_data if valid else None)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        assert server.transport is not None
        tls = server.transport.get_extra_info("ssl_object")
        assert isinstance(session.auth_data, LoginPassword)
        self.received.append(
            Received(
                recipients=list(envelope.rcpt_tos),
                tls_version=tls.version() if isinstance(tls, ssl.SSLObject) else None,
                login=session.auth_data.login.decode(),
            )
        )
        return "250 OK"


StartServer = Callable[..., tuple[SubmissionServer, int]]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start aiosmtpd servers that require login (keyword arguments go to Controller)."""
    controllers: list[Controller] = []

    def start(**options: Any) -> tuple[SubmissionServer, int]:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port: int = probe.getsockname()[1]
        handler = SubmissionServer()
        controller = Controller(
            handler,
            hostname=HOST,
            port=port,
            authenticator=handler.authenticate,
            auth_required=True,
            **options,
        )
        controller.start()
        controllers.append(controller)
        return handler, port

    yield start
    for controller in controllers:
        controller.stop()


def start_starttls_server(
    start_server: StartServer, context: ssl.SSLContext, *, exclude: tuple[str, ...] = ()
) -> tuple[SubmissionServer, int]:
    return start_server(
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_exclude_mechanism=exclude,
    )


# aiosmtpd counts only STARTTLS for auth_require_tls; with implicit TLS it warns needlessly.
IMPLICIT_TLS_AUTH_WARNING = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning"
)


def start_implicit_tls_server(
    start_server: StartServer, context: ssl.SSLContext
) -> tuple[SubmissionServer, int]:
    return start_server(ssl_context=context, auth_require_tls=False)


def smtp_url(
    scheme: str, port: int, password: str, query: str = "", *, host: str = HOST
) -> SecretStr:
    credentials = f"{quote(SMTP_USER, safe='')}:{quote(password, safe='')}"
    return SecretStr(f"{scheme}://{credentials}@{host}:{port}{query}")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_mail_goes_out_encrypted_after_login(
    engine: Engine,
    settings: Settings,
    certificates: ServerCertificates,
    start_server: StartServer,
    mechanism: str,
) -> None:
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    server, port = start_starttls_server(start_server, certificates.trusted, exclude=(other,))
    url = smtp_url("smtp", port, SMTP_PASSWORD, "?starttls=true")

    event_id = mail_a_credential_failure(engine, settings.model_copy(update={"smtp_url": url}))

    (received,) = server.received
    assert received.recipients == ["owner@crm.test"]
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    assert received.login == SMTP_USER
    assert server.mechanisms_tried == [mechanism]
    assert email_delivery(engine, event_id).state is DeliveryState.SUCCEEDED


def test_a_wrong_smtp_password_is_retried_later_and_never_shown(
    engine: Engine,
    settings: Settings,
    certificates: ServerCertificates,
    start_server: StartServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server, port = start_starttls_server(start_server, certificates.trusted)
    wrong_password = register_secret(SecretKind.SMTP_PASSWORD, "not-the-p@ss/word", "wrong")
    wrong_url = smtp_url("smtp", port, wrong_password, "?starttls=true")

    event_id = mail_a_credential_failure(
        engine, settings.model_copy(update={"smtp_url": wrong_url})
    )

    assert server.received == []
    assert server.mechanisms_tried  # the server was asked, and said no
    failed = email_delivery(engine, event_id)
    assert failed.state is DeliveryState.PENDING
    assert failed.attempts == 1
    assert failed.next_attempt_at is not None
    assert failed.last_error is not None
    assert "535" in failed.last_error
    for secret in (wrong_password, quote(wrong_password, safe="")):
        assert secret not in failed.last_error
        assert secret not in caplog.text

    # The operator fixes SMTP_URL; the retry, once due, goes out.
    fixed = settings.model_copy(
        update={"smtp_url": smtp_url("smtp", port, SMTP_PASSWORD, "?starttls=true")}
    )
    secrets = SecretBox.from_settings(fixed)
    asyncio.run(dispatch_due(engine, fixed, secrets, now=failed.next_attempt_at))

    assert [received.login for received in server.received] == [SMTP_USER]
    assert email_delivery(engine, event_id).state is DeliveryState.SUCCEEDED


@IMPLICIT_TLS_AUTH_WARNING
def test_implicit_tls_mail_goes_out_encrypted_after_login(
    engine: Engine,
    settings: Settings,
    certificates: ServerCertificates,
    start_server: StartServer,
) -> None:
    server, port = start_implicit_tls_server(start_server, certificates.trusted)

    event_id = mail_a_credential_failure(
        engine, settings.model_copy(update={"smtp_url": smtp_url("smtps", port, SMTP_PASSWORD)})
    )

    (received,) = server.received
    assert received.recipients == ["owner@crm.test"]
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    assert received.login == SMTP_USER
    assert email_delivery(engine, event_id).state is DeliveryState.SUCCEEDED


@IMPLICIT_TLS_AUTH_WARNING
@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_a_server_certificate_from_an_untrusted_ca_gets_no_mail_and_no_password(
    engine: Engine,
    settings: Settings,
    certificates: ServerCertificates,
    start_server: StartServer,
    scheme: str,
) -> None:
    if scheme == "smtps":
        server, port = start_implicit_tls_server(start_server, certificates.untrusted)
        url = smtp_url(scheme, port, SMTP_PASSWORD)
    else:
        server, port = start_starttls_server(start_server, certificates.untrusted)
        url = smtp_url(scheme, port, SMTP_PASSWORD, "?starttls=true")

    event_id = mail_a_credential_failure(engine, settings.model_copy(update={"smtp_url": url}))

    assert server.received == []
    assert server.mechanisms_tried == []  # the login never left the client
    failed = email_delivery(engine, event_id)
    assert failed.state is DeliveryState.PENDING
    assert failed.attempts == 1
    assert failed.last_error == "SMTP failed: SSLCertVerificationError"


@IMPLICIT_TLS_AUTH_WARNING
@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
@pytest.mark.parametrize("host", ["relay.mail.test", "localhost"])
def test_tls_checks_the_relay_name_not_the_vetted_address_connected_to(
    *,
    engine: Engine,
    settings: Settings,
    certificates: ServerCertificates,
    start_server: StartServer,
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
    host: str,
) -> None:
    """The certificate names localhost and 127.0.0.1: another name fails, even at 127.0.0.1."""
    if scheme == "smtps":
        server, port = start_implicit_tls_server(start_server, certificates.trusted)
        url = smtp_url(scheme, port, SMTP_PASSWORD, host=host)
    else:
        server, port = start_starttls_server(start_server, certificates.trusted)
        url = smtp_url(scheme, port, SMTP_PASSWORD, "?starttls=true", host=host)
    resolve_name(monkeypatch, "relay.mail.test", HOST)

    event_id = mail_a_credential_failure(engine, settings.model_copy(update={"smtp_url": url}))

    delivery = email_delivery(engine, event_id)
    if host == "localhost":
        assert delivery.state is DeliveryState.SUCCEEDED
        assert [received.login for received in server.received] == [SMTP_USER]
    else:
        assert delivery.last_error == "SMTP failed: SSLCertVerificationError"
        assert server.mechanisms_tried == []  # the login never left the client
