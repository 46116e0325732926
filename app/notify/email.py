"""Credential-failure mail over SMTP (`SMTP_URL`), plain text + HTML.

    smtp://user:pass@host:587?starttls=true   STARTTLS on the submission port
    smtps://user:pass@host:465                TLS from the first byte
    smtp://host:25                            no TLS, no login (a local relay)

SSRF: the host is resolved once and every address must be public unless
`SMTP_ALLOW_PRIVATE_HOSTS` (a relay on 127.0.0.1 needs it); the connection then
goes to a vetted address, and TLS still checks the certificate against the
host name. A blocked host fails the delivery for good, with a warning logged.

A recipient the server refuses for good (5xx) fails the delivery; anything
else (connection, 4xx, a login problem an operator can fix) is retried on the
schedule of `app.notify.retry`. One message per recipient, so one person's
refused address never repeats the mail to the others.

One mail has one deadline (`SMTP_TIMEOUT_SECONDS`) for the whole conversation:
smtplib's timeout is per read, so a server that sends a byte a second would
otherwise hold a dispatcher slot for ever; at the deadline the socket is shut
down and the blocked read fails (retried later).
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

from app.config import Settings
from app.netguard import (
    AddressBlocked,
    ResolutionFailed,
    ResolvedAddress,
    connect_resolved,
    resolve,
)
from app.notify.messages import NoticeMessage

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


class MailNotSent(Exception):
    """The mail did not go out; `permanent` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how mail goes out, read from `SMTP_URL`."""

    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None
    allow_private_hosts: bool
    deadline_seconds: float

    @classmethod
    def from_url(
        cls, url: str, *, allow_private_hosts: bool, deadline_seconds: float
    ) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:587?starttls=true")
        implicit_tls = parts.scheme == "smtps"
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls=query.get("starttls", ["false"])[0].lower() in _TRUE,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            allow_private_hosts=allow_private_hosts,
            deadline_seconds=deadline_seconds,
        )


class _DeadlineSMTP(smtplib.SMTP):
    """SMTP whose whole conversation ends by a deadline: then the socket is shut down."""

    _deadline: threading.Timer | None = None

    def _arm_deadline(self, seconds: float) -> None:
        self._deadline = threading.Timer(seconds, self._hang_up)
        self._deadline.daemon = True
        self._deadline.start()

    def _hang_up(self) -> None:
        sock = self.sock  # close() may clear it meanwhile
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().close()


class _PinnedSMTP(_DeadlineSMTP):
    """SMTP over a connection to one of the addresses the SSRF guard vetted."""

    def __init__(self, server: SmtpServer, addresses: list[ResolvedAddress]) -> None:
        self._addresses = addresses
        self._arm_deadline(server.deadline_seconds)
        super().__init__(server.host, server.port, timeout=server.deadline_seconds)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return connect_resolved(self._addresses, timeout)


class _PinnedSMTPSSL(_DeadlineSMTP, smtplib.SMTP_SSL):
    """SMTP over TLS from the first byte to a vetted address; the certificate must name the host."""

    def __init__(
        self, server: SmtpServer, addresses: list[ResolvedAddress], context: ssl.SSLContext
    ) -> None:
        self._addresses = addresses
        self._arm_deadline(server.deadline_seconds)
        super().__init__(server.host, server.port, timeout=server.deadline_seconds, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = connect_resolved(self._addresses, timeout)
        try:
            return self.context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise


def smtp_server(settings: Settings) -> SmtpServer | None:
    """Return the configured SMTP server; None turns the email channel off."""
    if settings.smtp_url is None:
        return None
    return SmtpServer.from_url(
        settings.smtp_url.get_secret_value(),
        allow_private_hosts=settings.smtp_allow_private_hosts,
        deadline_seconds=settings.smtp_timeout_seconds,
    )


def send_mail(server: SmtpServer, sender: str, recipient: str, message: NoticeMessage) -> None:
    """Send one message to one recipient (blocking); raise MailNotSent when it did not go."""
    mail = _mail(sender, recipient, message)
    addresses = _vetted_addresses(server)
    context = ssl.create_default_context()
    try:
        smtp: smtplib.SMTP = (
            _PinnedSMTPSSL(server, addresses, context)
            if server.implicit_tls
            else _PinnedSMTP(server, addresses)
        )
        with smtp:
            if server.starttls:
                smtp.starttls(context=context)
            if server.username is not None:
                smtp.login(server.username, server.password or "")
            smtp.send_message(mail)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise MailNotSent(
            f"recipient refused ({', '.join(map(str, codes))})",
            permanent=all(code >= 500 for code in codes),
        ) from exc
    except smtplib.SMTPResponseException as exc:
        raise MailNotSent(f"SMTP {exc.smtp_code}", permanent=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise MailNotSent(f"SMTP failed: {type(exc).__name__}", permanent=False) from exc


def _mail(sender: str, recipient: str, message: NoticeMessage) -> EmailMessage:
    """Write the message; an address the email package cannot put in a header is permanent.

    The package refuses any header value that `str.splitlines` would split
    (CR, LF, but also VT, FF, FS, GS, RS, NEL, U+2028) rather than let it start a header.
    """
    mail = EmailMessage()
    try:
        mail["From"] = sender
        mail["To"] = recipient
        mail["Subject"] = message.title
    except ValueError as exc:
        raise MailNotSent("a header value holds a line break", permanent=True) from exc
    mail.set_content(message.text)
    mail.add_alternative(message.html, subtype="html")
    return mail


def _vetted_addresses(server: SmtpServer) -> list[ResolvedAddress]:
    """Resolve the SMTP host once; refuse it for good when it is inside our network."""
    try:
        return resolve(server.host, server.port, allow_private=server.allow_private_hosts)
    except AddressBlocked as exc:
        log.warning(
            "notify.smtp_host_blocked",
            extra={"host": server.host, "allowed_by": "SMTP_ALLOW_PRIVATE_HOSTS=true"},
        )
        raise MailNotSent(
            f"SMTP host {server.host} resolves to a loopback, private or link-local"
            " address; SMTP_ALLOW_PRIVATE_HOSTS=true allows it",
            permanent=True,
        ) from exc
    except ResolutionFailed as exc:
        raise MailNotSent(f"SMTP host {server.host} does not resolve", permanent=False) from exc
