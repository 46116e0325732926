"""Open an asyncio IMAP session: the steps before `AsyncConnection` watches (RFC 9051).

    connect_async: resolve + TCP through the SSRF guard (in a thread) -> TLS
      (implicit, or STARTTLS only when offered) -> greeting -> LOGIN /
      AUTHENTICATE XOAUTH2 -> CAPABILITY (after login) -> ID -> AsyncConnection

The session itself (commands, IDLE, NOTIFY, events) is `aio_client.py`; these
steps run once per connection and share its framing and typed errors.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from app import netguard
from app.imap.aio_client import AsyncConnection, spaced
from app.imap.config import ConnectOptions, ImapConfig, Security
from app.imap.connection import client_version, imap_errors, resolve_server, tls_context
from app.imap.errors import ProtocolError, TlsFailed
from app.imap.stream import ImapStream
from app.imap.wire import WireLimits, astring

log = logging.getLogger(__name__)

# Dead peers are found by the kernel too: probes after 60 s of silence, every 20 s, 3 tries.
_KEEPALIVE = ((socket.TCP_KEEPIDLE, 60), (socket.TCP_KEEPINTVL, 20), (socket.TCP_KEEPCNT, 3))


async def connect_async(
    config: ImapConfig,
    options: ConnectOptions | None = None,
    limits: WireLimits | None = None,
) -> AsyncConnection:
    """Open an authenticated asyncio session for `config`, or raise the `ImapError` that says why.

    Resolution and the TCP connect run in a thread through the same SSRF guard
    as `connect()`; the connected socket is then handed to asyncio.
    """
    options = options or ConnectOptions()
    limits = limits or WireLimits()
    addresses = await asyncio.to_thread(resolve_server, config, options)
    context = tls_context(config, options) if config.security is not Security.NONE else None
    implicit_tls = context if config.security is Security.SSL else None
    with imap_errors(connecting=True):
        sock = await asyncio.to_thread(
            netguard.connect_resolved, addresses, options.connect_timeout
        )
    try:
        for option, value in _KEEPALIVE:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        reader = asyncio.StreamReader(limit=limits.max_line)
        with imap_errors(connecting=True):
            _, stream = await asyncio.get_running_loop().create_connection(
                lambda: ImapStream(reader), sock=sock
            )
    except BaseException:
        sock.close()
        raise
    connection = AsyncConnection(reader, stream, options, limits)
    try:
        if implicit_tls is not None:
            with imap_errors(connecting=True):
                async with asyncio.timeout(options.connect_timeout):
                    await stream.start_tls(implicit_tls, config.host)
        await greet(connection)
        if config.security is Security.STARTTLS:
            assert context is not None
            await start_tls(connection, context, config.host)
        if config.access_token is not None:
            await connection.authenticate_xoauth2(
                config.username, config.access_token.get_secret_value()
            )
        else:
            assert config.password is not None  # ImapConfig guarantees one credential
            await connection.login(config.username, config.password.get_secret_value())
        if not connection.capabilities:  # RFC 9051 6.2: they may change at login
            await connection.capability()
        if connection.has("ID"):
            await identify(connection)
    except BaseException:
        await connection.abort()
        raise
    return connection


async def greet(connection: AsyncConnection) -> None:
    """Read the greeting: OK, or BYE (`ServerUnavailable` with [UNAVAILABLE]).

    PREAUTH is refused too: a server that needs no credentials is not the
    account that was configured.
    """
    response = await connection._read(timeout=connection._options.connect_timeout)
    assert response is not None  # no `wait`: a missing greeting raises TimedOut
    connection._watch_for_bye(response)
    if response.tag != b"*" or response.name != "OK":
        raise ProtocolError(f"unexpected greeting: {response.name} {response.text}")
    connection._take_capability_code(response)


async def start_tls(connection: AsyncConnection, context: ssl.SSLContext, host: str) -> None:
    """STARTTLS when offered, refusing plaintext the server sent ahead of the handshake."""
    if not connection.capabilities:
        await connection.capability()
    if not connection.has("STARTTLS"):
        raise TlsFailed("the server does not offer STARTTLS")
    _, done = await connection._command("STARTTLS")
    connection._check(done, "STARTTLS")
    buffered = getattr(connection._reader, "_buffer", None)  # StreamReader keeps no public length
    if isinstance(buffered, bytearray) and buffered:
        raise TlsFailed("the server sent data before the TLS handshake")
    with imap_errors(connecting=True):
        async with asyncio.timeout(connection._options.connect_timeout):
            await connection._stream.start_tls(context, host)
    connection.capabilities = frozenset()  # RFC 9051 7.1: forget what was said in plaintext
    await connection.capability()


async def identify(connection: AsyncConnection) -> None:
    """Send RFC 2971 ID, as `connect()` does; a refusal is not an error."""
    fields = spaced(
        astring("name"),
        astring(connection._options.client_name),
        astring("version"),
        astring(client_version()),
    )
    _, done = await connection._command("ID", b" (", *fields[1:], b")")
    if done.name != "OK":
        log.debug("imap.id_refused")
