"""The connector factory: open, secure and authenticate one IMAP session.

    resolve host (SSRF guard) -> TCP to a vetted address -> TLS (implicit, or
    STARTTLS only when offered) -> greeting -> LOGIN / AUTHENTICATE XOAUTH2 -> ID

Every failure on the way leaves as one `ImapError` subclass, so the sync
engine decides by type whether to tell the owner (`AuthenticationFailed`) or
to retry later (`NetworkError`). The session counts the commands it sends,
which is how the sync engine proves that an unchanged folder costs one round
trip.
"""

from __future__ import annotations

import imaplib
import io
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout
from typing_extensions import Buffer

from app import netguard
from app.imap.config import ConnectOptions, ImapConfig, Security
from app.imap.errors import (
    AuthenticationFailed,
    BlockedHost,
    ConnectionLost,
    ImapError,
    ProtocolError,
    ResponseTooLarge,
    ServerUnavailable,
    TimedOut,
    TlsFailed,
    Unreachable,
)

log = logging.getLogger(__name__)

# RFC 5530 response codes that mean "try again later", not "wrong credentials".
_TRANSIENT_LOGIN_CODES = {"UNAVAILABLE", "SERVERBUG", "INUSE", "LIMIT"}
_RESPONSE_CODE = re.compile(r"\[([A-Z-]+)")
_RECEIVE_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class _SessionLimits:
    """How long each wait may last and how much one response may make the client hold."""

    connect_timeout: float
    read_timeout: float
    deadline: float | None  # time.monotonic() by which the whole operation must be done
    max_line_bytes: int
    max_literal_bytes: int

    @classmethod
    def of(cls, options: ConnectOptions) -> _SessionLimits:
        """Start the operation's clock now, when it has a deadline."""
        timeout = options.operation_timeout
        return cls(
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            deadline=time.monotonic() + timeout if timeout is not None else None,
            max_line_bytes=options.max_line_bytes,
            max_literal_bytes=options.max_literal_bytes,
        )

    def budget(self, timeout: float) -> float:
        """Return how long the next wait may take; raise `TimeoutError` once the deadline passed."""
        if self.deadline is None:
            return timeout
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the operation's deadline passed")
        return min(timeout, remaining)


@cache
def client_version() -> str:
    """Return our version for RFC 2971 ID; "dev" from a source tree that was never installed."""
    try:
        return version("imap-bridge")
    except PackageNotFoundError:
        return "dev"


@contextmanager
def imap_errors(*, connecting: bool = False) -> Iterator[None]:
    """Translate socket, TLS, imaplib and imapclient failures into `ImapError`s.

    While `connecting`, an `OSError` means the server cannot be reached; once
    a session exists it means the session was lost.
    """
    try:
        yield
    except ImapError:
        raise
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise TlsFailed(f"TLS failed: {exc.__class__.__name__}") from exc
    except TimeoutError as exc:
        raise TimedOut("the server did not answer in time") from exc
    except LoginError as exc:
        if isinstance(exc.__context__, imaplib.IMAP4.abort):  # imapclient wraps a lost session
            raise ConnectionLost("the connection was lost during login") from exc
        raise login_refusal(str(exc)) from exc
    except (IMAPClientAbortError, imaplib.IMAP4.abort, EOFError) as exc:
        raise ConnectionLost("the server closed the connection") from exc
    except (IMAPClientError, imaplib.IMAP4.error) as exc:
        raise ProtocolError(_server_said(exc)) from exc
    except OSError as exc:
        if connecting:
            raise Unreachable(f"cannot connect: {exc.strerror or exc}") from exc
        raise ConnectionLost(f"connection lost: {exc.strerror or exc}") from exc


def _server_said(exc: Exception) -> str:
    """Keep the server's words short; they never contain our credentials."""
    return str(exc)[:300]


def login_refusal(server_text: str) -> ImapError:
    """Tell a wrong credential from a server that cannot log anyone in right now.

    The tagged NO of LOGIN/AUTHENTICATE carries an RFC 5530 response code
    (`NO [UNAVAILABLE] ...`); imapclient keeps only that line's text, so the
    bracketed code is read back from it. It is protocol data, not prose.
    """
    match = _RESPONSE_CODE.search(server_text)
    code = match.group(1) if match else None
    if code in _TRANSIENT_LOGIN_CODES:
        return ServerUnavailable(f"the server cannot log in now ({code})")
    return AuthenticationFailed("the server refused the credentials")


class _PinnedIMAP4(imaplib.IMAP4):
    """imaplib connection that dials pre-vetted addresses, counts commands and bounds reads.

    `host` stays the name the user gave, so TLS verifies the certificate
    against it while the socket goes to an address the guard already checked.

    Reads go through a buffered reader of our own instead of imaplib's file
    object. A buffered `read(n)` allocates the n bytes a literal announces
    before any arrive, so a literal announced larger than
    `limits.max_literal_bytes`, or a line longer than `limits.max_line_bytes`,
    raises `ResponseTooLarge` first. Every receive and send waits at most the read timeout, and
    never past the operation's deadline: a server that drips one byte just
    inside the read timeout still runs out of time (`TimedOut`). A TLS
    handshake (implicit or STARTTLS) starts with the socket's timeout set to
    what is left of that budget, and CPython's handshake treats its timeout as
    one deadline for the whole exchange, so a dripped certificate is cut short
    too.
    """

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[netguard.ResolvedAddress],
        tls_context: ssl.SSLContext | None,
        limits: _SessionLimits,
    ) -> None:
        self._addresses = addresses
        self._tls_context = tls_context
        self._limits = limits
        self._reader_sock: socket.socket | None = None
        self._buffered: io.BufferedReader
        self.commands_sent = 0
        self._wait = limits.connect_timeout  # the greeting belongs to connecting
        super().__init__(host, port, limits.budget(limits.connect_timeout))
        self._wait = limits.read_timeout

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = netguard.connect_resolved(self._addresses, timeout or 10.0)
        if self._tls_context is None:
            return sock
        try:
            return self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _command(self, name: str, *args: Any) -> Any:
        self.commands_sent += 1
        log.debug("imap.command", extra={"command": name})
        return super()._command(name, *args)  # type: ignore[misc]

    def send(self, data: Buffer) -> None:
        self.sock.settimeout(self.wait_budget())
        self.sock.sendall(data)

    def readline(self) -> bytes:
        """Read one line (with its LF), or what came before the server closed the connection."""
        line = self._reader().readline(self._limits.max_line_bytes + 1)
        if len(line) > self._limits.max_line_bytes:
            raise self._refused(f"the server sent a line over {self._limits.max_line_bytes} bytes")
        return line

    def read(self, size: int) -> bytes:
        """Read a literal of `size` bytes (fewer when the server closes the connection)."""
        if size > self._limits.max_literal_bytes:
            raise self._refused(
                f"the server announced a literal of {size} bytes,"
                f" over the limit of {self._limits.max_literal_bytes}"
            )
        return self._reader().read(size)

    def _refused(self, reason: str) -> ResponseTooLarge:
        """Hang up: the rest of the response would be read as commands' answers."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        return ResponseTooLarge(reason)

    def _reader(self) -> io.BufferedReader:
        """Return the buffered reader of the current socket (a new one after STARTTLS).

        A new socket gets a new buffer, so bytes that came before the TLS
        handshake are never read as if they had been encrypted.
        """
        if self._reader_sock is not self.sock:
            self._buffered = io.BufferedReader(_DeadlineReads(self.sock, self), _RECEIVE_BYTES)
            self._reader_sock = self.sock
        return self._buffered

    def wait_budget(self) -> float:
        """Return how long the next socket wait may take (see `_SessionLimits.budget`)."""
        return self._limits.budget(self._wait)


class _DeadlineReads(io.RawIOBase):
    """A socket as a raw stream whose every receive waits at most the session's budget."""

    def __init__(self, sock: socket.socket, session: _PinnedIMAP4) -> None:
        self._sock = sock
        self._session = session

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        self._sock.settimeout(self._session.wait_budget())
        return self._sock.recv_into(buffer)


class _PinnedIMAPClient(IMAPClient):  # type: ignore[misc]
    """IMAPClient whose transport is `_PinnedIMAP4`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        addresses: list[netguard.ResolvedAddress],
        implicit_tls: ssl.SSLContext | None,
        limits: _SessionLimits,
    ) -> None:
        self._addresses = addresses
        self._implicit_tls = implicit_tls
        self._limits = limits
        timeout = SocketTimeout(limits.connect_timeout, limits.read_timeout)
        super().__init__(host, port=port, ssl=implicit_tls is not None, timeout=timeout)
        # imapclient turns imaplib's debug tracing on for its logger, which formats every
        # response (message bodies included) into text that is then thrown away.
        self._imap.debug = 0

    def _create_IMAP4(self) -> _PinnedIMAP4:  # noqa: N802 - imapclient's hook name
        return _PinnedIMAP4(self.host, self.port, self._addresses, self._implicit_tls, self._limits)


def tls_context(config: ImapConfig, options: ConnectOptions) -> ssl.SSLContext:
    """Return the TLS context: system or configured CA, TLS 1.2+, verification unless opted out.

    Loading the system CA store costs tens of milliseconds of CPU, more than the
    rest of a no-change sync, so contexts are shared by every connection with
    the same trust settings; a CA file that changes on disk gets a new one.
    """
    ca_file = str(options.ca_file) if options.ca_file else None
    ca_version = os.stat(ca_file).st_mtime_ns if ca_file else None
    return _shared_tls_context(ca_file, ca_version, verify=config.tls_verify)


@lru_cache(maxsize=32)
def _shared_tls_context(
    ca_file: str | None, ca_version: int | None, *, verify: bool
) -> ssl.SSLContext:
    """Build one context; `ca_version` (the file's mtime) is only part of the cache key."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ImapConnection:
    """One authenticated IMAP session; `close()` (or leaving the `with`) logs out."""

    def __init__(self, client: IMAPClient, config: ImapConfig) -> None:
        self.client = client
        self.config = config
        with imap_errors():
            raw = client.capabilities()
        self.capabilities = frozenset(
            (c.decode() if isinstance(c, bytes) else str(c)).upper() for c in raw
        )

    def has(self, capability: str) -> bool:
        """Say whether the server announced `capability` after login."""
        return capability.upper() in self.capabilities

    @property
    def commands_sent(self) -> int:
        """Count every IMAP command sent on this session, login included."""
        imap: _PinnedIMAP4 = self.client._imap
        return imap.commands_sent

    def close(self) -> None:
        """Log out, or just drop the socket when the session is already broken."""
        try:
            self.client.logout()
        except (ImapError, IMAPClientError, imaplib.IMAP4.error, OSError, EOFError):
            with suppress(OSError):  # the session was already gone
                self.client.shutdown()

    def __enter__(self) -> ImapConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def connect(config: ImapConfig, options: ConnectOptions | None = None) -> ImapConnection:
    """Open an authenticated session for `config`, or raise the `ImapError` that says why."""
    options = options or ConnectOptions()
    limits = _SessionLimits.of(options)
    addresses = resolve_server(config, options)
    context = tls_context(config, options) if config.security is not Security.NONE else None
    with imap_errors(connecting=True):
        client = _PinnedIMAPClient(
            config.host,
            config.port,
            addresses=addresses,
            implicit_tls=context if config.security is Security.SSL else None,
            limits=limits,
        )
    try:
        with imap_errors(connecting=True):
            if config.security is Security.STARTTLS:
                _start_tls(client, context)
        with imap_errors():
            _authenticate(client, config)
        connection = ImapConnection(client, config)
        if connection.has("ID"):
            _identify(connection, options)
    except BaseException:
        with suppress(OSError):  # a failed TLS upgrade has already closed the socket
            client.shutdown()
        raise
    return connection


def resolve_server(config: ImapConfig, options: ConnectOptions) -> list[netguard.ResolvedAddress]:
    """Resolve the server through the SSRF guard: the only addresses a session may dial."""
    try:
        return netguard.resolve(config.host, config.port, allow_private=options.allow_private_hosts)
    except netguard.AddressBlocked as exc:
        raise BlockedHost(str(exc)) from exc
    except netguard.ResolutionFailed as exc:
        raise Unreachable(str(exc)) from exc


def _start_tls(client: IMAPClient, context: ssl.SSLContext | None) -> None:
    offered = {c.upper() for c in client.capabilities()}
    if b"STARTTLS" not in offered:
        raise TlsFailed("the server does not offer STARTTLS")
    client.starttls(context)


def _authenticate(client: IMAPClient, config: ImapConfig) -> None:
    """Log in with the one credential `config` holds.

    LOGIN's arguments are ASCII only (RFC 3501 strings; imaplib encodes them so), so
    a username or password with other characters goes through AUTHENTICATE PLAIN,
    whose RFC 4616 message is UTF-8; a server that offers no PLAIN cannot take it.
    """
    if config.access_token is not None:
        client.oauth2_login(config.username, config.access_token.get_secret_value())
        return
    assert config.password is not None  # ImapConfig guarantees one credential
    username, password = config.username, config.password.get_secret_value()
    if username.isascii() and password.isascii():
        client.login(username, password)
    elif b"AUTH=PLAIN" in {c.upper() for c in client.capabilities()}:
        client.plain_login(username, password)
    else:
        raise AuthenticationFailed(
            "the server takes credentials with non-ASCII characters only through"
            " AUTHENTICATE PLAIN, which it does not offer"
        )


def _identify(connection: ImapConnection, options: ConnectOptions) -> None:
    """Send RFC 2971 ID; some providers (163.com, Yandex) refuse sessions without it."""
    try:
        with imap_errors():
            connection.client.id_({"name": options.client_name, "version": client_version()})
    except ProtocolError:
        log.debug("imap.id_refused")
