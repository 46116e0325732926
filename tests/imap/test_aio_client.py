"""The asyncio watch client against the suite's real Dovecot, and against hostile peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TypeVar

import pytest
from pydantic import SecretStr

from app.imap.aio_client import AsyncConnection
from app.imap.aio_connect import connect_async
from app.imap.changes import (
    Event,
    FolderChanged,
    MessageChanged,
    MessagesExist,
    MessagesVanished,
)
from app.imap.config import ConnectOptions, ImapConfig, Security
from app.imap.errors import (
    AuthenticationFailed,
    ConnectionLost,
    FolderNotFound,
    ProtocolError,
    ServerUnavailable,
    TimedOut,
    TlsFailed,
)
from app.imap.wire import WireLimits
from tests.support.dovecot import Dovecot, DovecotInstances, MailUser
from tests.support.imap_config import config_for
from tests.support.mailgen import make_message
from tests.support.oauth_rig import oauth_dovecot, sign_jwt

Result = TypeVar("Result")
# Dovecot announces a change within about a second (mailbox_idle_check_interval = 1 s);
# the margin absorbs a loaded machine.
EVENT_WAIT = 20.0


def run(coroutine: Coroutine[None, None, Result]) -> Result:
    return asyncio.run(coroutine)


async def first_event(
    connection: AsyncConnection,
    matches: Callable[[Event], bool],
    trigger: Callable[[], object],
    renew_after: float = 600,
) -> Event:
    """Run `trigger` in a thread while idling; return the first event `matches` accepts."""
    seen: list[Event] = []

    async def watch() -> Event:
        async for event in connection.events(renew_after=renew_after):
            seen.append(event)
            if matches(event):
                return event
        raise AssertionError("events() ended")

    watching = asyncio.create_task(watch())
    await asyncio.sleep(0.2)  # IDLE is under way before the change happens
    await asyncio.to_thread(trigger)
    try:
        return await asyncio.wait_for(watching, EVENT_WAIT)
    except TimeoutError:
        raise AssertionError(f"no matching event within {EVENT_WAIT} s; saw {seen}") from None


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
def test_logs_in_over_each_transport_and_selects(
    mail_user: MailUser, connect_options: ConnectOptions, security: str
) -> None:
    port = mail_user.dovecot.tls_port if security == "ssl" else mail_user.dovecot.plain_port
    mail_user.append("INBOX", make_message())

    async def scenario() -> None:
        config = config_for(mail_user, security=security, port=port)
        async with await connect_async(config, connect_options) as connection:
            assert connection.has("IDLE"), connection.capabilities
            assert not connection.has("LOGINDISABLED")
            assert "QRESYNC" in await connection.enable_change_tracking()
            inbox = await connection.select("INBOX")
            assert inbox.exists == 1
            assert inbox.uidnext == 2
            assert inbox.uidvalidity == mail_user.uidvalidity("INBOX")
            assert inbox.highestmodseq is not None
            status = await connection.status("Archive")
            assert (status.messages, status.uidnext) == (0, 1)
            assert status.highestmodseq is not None
            with pytest.raises(FolderNotFound):
                await connection.select("No such folder")

    run(scenario())


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_certificate_from_another_ca_is_tls_failed(
    mail_user: MailUser, connect_options: ConnectOptions, security: str
) -> None:
    port = mail_user.dovecot.tls_port if security == "ssl" else mail_user.dovecot.plain_port
    config = config_for(mail_user, security=security, port=port)
    options = replace(connect_options, ca_file=mail_user.dovecot.other_ca_file)
    with pytest.raises(TlsFailed):
        run(connect_async(config, options))


def test_starttls_not_offered_is_tls_failed(
    dovecot_instances: DovecotInstances, connect_options: ConnectOptions
) -> None:
    plain_only = dovecot_instances.get(starttls=False)
    user = plain_only.add_user()
    config = config_for(user, security="starttls", port=plain_only.plain_port)
    with pytest.raises(TlsFailed, match="does not offer STARTTLS"):
        run(connect_async(config, replace(connect_options, ca_file=plain_only.ca_file)))


def test_password_with_quotes_backslashes_and_8bit_logs_in(
    dovecot: Dovecot, connect_options: ConnectOptions
) -> None:
    user = dovecot.add_user(password='p"a\\ss wörd{5}')

    async def scenario() -> None:
        async with await connect_async(config_for(user), connect_options) as connection:
            assert connection.has("IDLE")

    run(scenario())


def test_wrong_password_is_authentication_failed(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    config = config_for(mail_user, password="not-the-password")
    with pytest.raises(AuthenticationFailed):
        run(connect_async(config, connect_options))


def test_idle_sees_an_append_an_expunge_and_a_flag_change(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    first = mail_user.append("INBOX", make_message())

    async def scenario() -> None:
        async with await connect_async(config_for(mail_user), connect_options) as connection:
            await connection.enable_change_tracking()
            await connection.select("INBOX")
            arrived = await first_event(
                connection,
                lambda e: isinstance(e, MessagesExist),
                lambda: mail_user.append("INBOX", make_message()),
            )
            assert arrived == MessagesExist("INBOX", 2)
            flagged = await first_event(
                connection,
                lambda e: isinstance(e, MessageChanged),
                lambda: mail_user.add_flags("INBOX", [first], ["\\Flagged"]),
            )
            assert isinstance(flagged, MessageChanged)
            assert flagged.uid == first
            assert flagged.flags is not None
            assert "\\Flagged" in flagged.flags
            gone = await first_event(
                connection,
                lambda e: isinstance(e, MessagesVanished),
                lambda: mail_user.expunge("INBOX", [first]),
            )
            assert gone == MessagesVanished("INBOX", str(first), earlier=False)

    run(scenario())


def test_idle_renewed_before_the_limit_keeps_reporting(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    async def scenario() -> None:
        async with await connect_async(config_for(mail_user), connect_options) as connection:
            await connection.select("INBOX")
            assert await connection.next_event(0.3) is None, "an event with nothing changed"
            arrived = await first_event(
                connection,
                lambda e: isinstance(e, MessagesExist),
                append_after_renewals,
                renew_after=0.5,
            )
            assert arrived == MessagesExist("INBOX", 1)
            assert connection.idle_renewals >= 1, "IDLE was not re-issued after 0.5 s"

    def append_after_renewals() -> None:
        time.sleep(1.6)
        mail_user.append("INBOX", make_message())

    run(scenario())


def test_notify_names_the_unselected_folder_that_got_mail_or_changed_flags(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    async def scenario() -> None:
        async with await connect_async(config_for(mail_user), connect_options) as connection:
            assert connection.has("NOTIFY"), connection.capabilities
            await connection.enable_change_tracking()
            await connection.select("INBOX")
            await connection.notify(["Archive", "Sent"])
            arrived = await first_event(
                connection,
                lambda e: isinstance(e, FolderChanged),
                lambda: mail_user.append("Archive", make_message()),
            )
            assert isinstance(arrived, FolderChanged)
            assert (arrived.folder, arrived.status.messages) == ("Archive", 1)
            assert arrived.status.highestmodseq is not None
            flagged = await first_event(
                connection,
                lambda e: isinstance(e, FolderChanged),
                lambda: mail_user.add_flags("Archive", mail_user.uids("Archive"), ["\\Seen"]),
            )
            assert isinstance(flagged, FolderChanged)
            assert flagged.folder == "Archive"
            assert (flagged.status.highestmodseq or 0) > arrived.status.highestmodseq

    run(scenario())


def test_status_list_status_and_noop_name_folders_in_modified_utf7(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    mail_user.create_folder("Entwürfe")
    mail_user.append("Entwürfe", make_message())

    async def scenario() -> None:
        async with await connect_async(config_for(mail_user), connect_options) as connection:
            assert (await connection.status("Entwürfe")).messages == 1
            statuses = await connection.list_status()
            assert statuses["Entwürfe"].messages == 1
            assert statuses["INBOX"].uidnext == 1
            await connection.select("Entwürfe")
            await asyncio.to_thread(mail_user.append, "Entwürfe", make_message())
            assert MessagesExist("Entwürfe", 2) in await connection.noop()

    run(scenario())


def test_doveadm_kick_is_connection_lost(
    mail_user: MailUser, connect_options: ConnectOptions
) -> None:
    async def scenario() -> None:
        connection = await connect_async(config_for(mail_user), connect_options)
        await connection.select("INBOX")
        with pytest.raises(ConnectionLost):
            await first_event(connection, lambda e: False, mail_user.kick)
        with pytest.raises(ConnectionLost):  # the dropped session is never reused
            await connection.noop()
        await connection.logout()

    run(scenario())


def test_server_without_condstore_gets_no_modseq_requests(
    legacy_dovecot: Dovecot, connect_options: ConnectOptions
) -> None:
    user = legacy_dovecot.add_user()
    options = replace(connect_options, ca_file=legacy_dovecot.ca_file)

    async def scenario() -> None:
        async with await connect_async(config_for(user), options) as connection:
            assert not connection.has("CONDSTORE")
            assert await connection.enable_change_tracking() == frozenset()
            inbox = await connection.select("INBOX")
            assert inbox.highestmodseq is None
            assert (await connection.status("INBOX")).highestmodseq is None

    run(scenario())


def test_xoauth2_logs_in_with_a_valid_token_and_refuses_an_expired_one(
    dovecot_instances: DovecotInstances, connect_options: ConnectOptions
) -> None:
    jwt_dovecot = oauth_dovecot(dovecot_instances)
    user = jwt_dovecot.add_user()
    options = replace(connect_options, ca_file=jwt_dovecot.ca_file)

    def config(token: str) -> ImapConfig:
        return config_for(user, password=None, access_token=token)

    async def scenario() -> None:
        async with await connect_async(config(sign_jwt(user.name)), options) as connection:
            await connection.select("INBOX")
        with pytest.raises(AuthenticationFailed):
            await connect_async(config(sign_jwt(user.name, expires_in=-60)), options)

    run(scenario())


# --- hostile peers ------------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
GREETING = b"* OK [CAPABILITY IMAP4rev1 IDLE] hostile ready\r\n"


@asynccontextmanager
async def hostile_server(script: Script) -> AsyncIterator[ImapConfig]:
    """Serve `script` on a loopback port; yield a plain-IMAP config that reaches it."""

    sessions: set[asyncio.Task[object]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions.update(task for task in [asyncio.current_task()] if task is not None)
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield ImapConfig(host="127.0.0.1", port=port, security="none", username="u", password="p")
    finally:
        server.close()
        if sessions:  # let each script see the client leave rather than be cancelled
            await asyncio.wait(sessions, timeout=5)


async def answer_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet, and accept the LOGIN that follows."""
    writer.write(GREETING)
    tag = (await reader.readline()).split(b" ")[0]
    writer.write(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
    await writer.drain()


HOSTILE_OPTIONS = ConnectOptions(connect_timeout=2, read_timeout=0.5, allow_private_hosts=True)


def test_a_literal_over_the_cap_is_refused_before_it_is_read() -> None:
    async def huge_literal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_login(reader, writer)
        tag = (await reader.readline()).split(b" ")[0]
        writer.write(b"* STATUS {2000000000}\r\n")  # 2 GB announced, never sent
        writer.write(tag + b" OK done\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(huge_literal) as config:
            connection = await connect_async(config, HOSTILE_OPTIONS, WireLimits(max_literal=4096))
            with pytest.raises(ProtocolError, match="literal over 4096"):
                await connection.noop()
            await connection.logout()

    run(scenario())


def test_a_line_over_the_cap_is_refused() -> None:
    async def endless_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_login(reader, writer)
        await reader.readline()
        writer.write(b"* OK " + b"x" * 100_000)
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(endless_line) as config:
            connection = await connect_async(config, HOSTILE_OPTIONS, WireLimits(max_line=1024))
            with pytest.raises(ProtocolError, match="line over 1024"):
                await connection.noop()

    run(scenario())


def test_a_server_that_stops_answering_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_login(reader, writer)
        await reader.read()  # reads the NOOP, never answers

    async def scenario() -> None:
        async with hostile_server(silent) as config:
            connection = await connect_async(config, HOSTILE_OPTIONS)
            with pytest.raises(TimedOut):
                await connection.noop()

    run(scenario())


def test_a_greeting_that_never_comes_times_out() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(mute) as config:
            with pytest.raises(TimedOut):
                await connect_async(config, replace(HOSTILE_OPTIONS, connect_timeout=0.5))

    run(scenario())


def test_bye_unavailable_during_idle_is_server_unavailable() -> None:
    async def going_down(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_login(reader, writer)
        tag = (await reader.readline()).split(b" ")[0]
        assert tag
        writer.write(b"+ idling\r\n* BYE [UNAVAILABLE] maintenance\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(going_down) as config:
            connection = await connect_async(config, HOSTILE_OPTIONS)
            with pytest.raises(ServerUnavailable):
                async for _event in connection.events():
                    pass

    run(scenario())


def test_plaintext_injected_after_starttls_is_refused() -> None:
    async def injecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
        tag = (await reader.readline()).split(b" ")[0]
        writer.write(tag + b" OK begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(injecting) as config:
            with pytest.raises(TlsFailed, match="before the TLS handshake"):
                await connect_async(
                    config.model_copy(update={"security": Security.STARTTLS}), HOSTILE_OPTIONS
                )

    run(scenario())


def test_login_waits_for_the_go_ahead_before_a_literal_without_literal_plus() -> None:
    received: list[bytes] = []

    async def strict(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)  # no LITERAL+: every literal waits for "+"
        first = await reader.readline()
        received.append(first)
        writer.write(b"+ go ahead\r\n")
        await writer.drain()
        size = int(first.rsplit(b"{", 1)[1].rstrip(b"}\r\n"))
        received.append(await reader.readexactly(size + 2))
        tag = first.split(b" ")[0]
        writer.write(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(strict) as server_config:
            config = server_config.model_copy(update={"password": SecretStr("pässword")})
            connection = await connect_async(config, HOSTILE_OPTIONS)
            await connection.abort()

    run(scenario())
    assert received[0].endswith(b' LOGIN "u" {9}\r\n'), received
    assert received[1] == "pässword".encode() + b"\r\n"


def test_a_peer_that_stops_answering_is_found_at_the_idle_renewal() -> None:
    async def dead_after_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_login(reader, writer)
        await reader.readline()  # IDLE
        writer.write(b"+ idling\r\n")
        await writer.drain()
        await reader.read()  # DONE, never answered

    async def scenario() -> None:
        async with hostile_server(dead_after_idle) as config:
            connection = await connect_async(config, HOSTILE_OPTIONS)
            with pytest.raises(TimedOut):
                async for _event in connection.events(renew_after=0.2):
                    pass

    run(scenario())


def test_idle_and_notify_are_refused_where_the_server_lacks_them() -> None:
    async def bare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        tag = (await reader.readline()).split(b" ")[0]
        writer.write(tag + b" OK [CAPABILITY IMAP4rev1] logged in\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(bare) as config:
            connection = await connect_async(config, HOSTILE_OPTIONS)
            with pytest.raises(ProtocolError, match="does not offer NOTIFY"):
                await connection.notify(["INBOX"])
            with pytest.raises(ProtocolError, match="does not offer IDLE"):
                await anext(connection.events())
            with pytest.raises(ProtocolError, match="does not offer LIST-STATUS"):
                await connection.list_status()
            await connection.abort()

    run(scenario())


def test_a_login_refused_as_unavailable_is_server_unavailable_not_bad_credentials() -> None:
    async def overloaded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        tag = (await reader.readline()).split(b" ")[0]
        writer.write(tag + b" NO [UNAVAILABLE] user database down\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        async with hostile_server(overloaded) as config:
            with pytest.raises(ServerUnavailable):
                await connect_async(config, HOSTILE_OPTIONS)

    run(scenario())
