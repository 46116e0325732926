"""An asyncio IMAP session for watching mailboxes (IDLE, NOTIFY) at thousands per process.

    connect_async (aio_connect.py) opens, greets, secures and logs in, then

    AsyncConnection:  enable / select / examine / status / list_status / notify / noop
        next_event(timeout) / events(): IDLE --untagged--> Event ...
                                             --renew_after--> DONE -> IDLE ...
        any command ends IDLE first (DONE); logout() / abort() end the session

An idle session is a socket, a StreamReader and a few objects: no thread, no
timer but the pending read's deadline, no CPU until the server speaks. Every
read has a deadline; every line and literal has a size cap (`WireLimits`).
Failures are the blocking connector's typed `ImapError`s, through the same
`imap_errors` translation, SSRF guard (`resolve_server`), TLS contexts
(`tls_context`) and login-refusal reading (`login_refusal`). An untagged BYE is
`ConnectionLost` (`ServerUnavailable` with `[UNAVAILABLE]`); after any
transport failure the session is dropped, never reused.

Why our own client and not aioimaplib (2.0.3, the maintained asyncio client on
PyPI, read before choosing; it does have IDLE and XOAUTH2): it dials with
`loop.create_connection(host, port)` inside its constructor, so the SSRF
guard's vetted addresses cannot be used (a second DNS lookup reopens
rebinding); it has no STARTTLS and no NOTIFY; it reads literals of any size
the server announces and lines of any length; its TLS is asyncio's, 282 KB per
idle session here (see `stream.py`); it ships no type information (mypy strict
would see Any everywhere); and its errors would need a translation layer of
their own. The watcher needs a small part of IMAP: this module, `wire.py`
(framing, caps), `stream.py` (TLS) and `changes.py` (events) are less code
than an adapter around aioimaplib that fixed all that.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

from app.imap.changes import (
    Event,
    FolderChanged,
    MailboxStatus,
    SelectedMailbox,
    encode_folder,
    event_from,
    parse_status,
)
from app.imap.config import ConnectOptions
from app.imap.connection import (
    imap_errors,
    login_refusal,
)
from app.imap.errors import (
    ConnectionLost,
    FolderNotFound,
    ImapError,
    ProtocolError,
    ServerUnavailable,
)
from app.imap.stream import ImapStream
from app.imap.wire import (
    Argument,
    Literal,
    Response,
    WireLimits,
    astring,
    read_line,
    read_response,
)

log = logging.getLogger(__name__)

# RFC 2177 lets a server drop an IDLE after 30 minutes without activity.
DEFAULT_IDLE_RENEW_SECONDS = 29 * 60
# RFC 5465 events worth a sync: arrivals, expunges and flag changes.
_NOTIFY_EVENTS = b"(MessageNew MessageExpunge FlagChange)"


class AsyncConnection:
    """One authenticated IMAP session on asyncio; use `aio_connect.connect_async` to open one.

    One task drives a session at a time (commands and `events()` share the stream).
    Cancelling that task mid-read drops the session, as any transport failure does.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        stream: ImapStream,
        options: ConnectOptions,
        limits: WireLimits,
    ) -> None:
        self._reader = reader
        self._stream = stream
        self._options = options
        self._limits = limits
        self._tags = 0
        self._events: deque[Event] = deque()
        self._idle_tag: bytes | None = None
        self._idle_since = 0.0
        self._logging_out = False
        self.idle_renewals = 0  # IDLEs ended by the renewal deadline, for tests and metrics
        self._broken = False
        self.capabilities: frozenset[str] = frozenset()
        self.enabled: frozenset[str] = frozenset()
        self.selected: str | None = None

    def has(self, capability: str) -> bool:
        """Say whether the server announced `capability` (after login, once logged in)."""
        return capability.upper() in self.capabilities

    async def capability(self) -> frozenset[str]:
        """Ask for CAPABILITY and remember the answer."""
        untagged, done = await self._command("CAPABILITY")
        self._check(done, "CAPABILITY")
        for response in untagged:
            if response.name == "CAPABILITY":
                self.capabilities = _words(response.segments[0])
        return self.capabilities

    async def login(self, username: str, password: str) -> None:
        """LOGIN with both strings quoted or sent as literals; NO is `AuthenticationFailed`."""
        _, done = await self._command("LOGIN", *spaced(astring(username), astring(password)))
        self._logged_in(done)

    async def authenticate_xoauth2(self, username: str, access_token: str) -> None:
        """AUTHENTICATE XOAUTH2, with SASL-IR when offered; NO is `AuthenticationFailed`.

        On a refused token the server sends a JSON challenge first; the empty
        line we answer it with ends the exchange in the tagged NO.
        """
        initial = base64.b64encode(
            f"user={username}\x01auth=Bearer {access_token}\x01\x01".encode()
        )
        answers = deque([initial] if not self.has("SASL-IR") else [])

        def answer(_challenge: Response) -> bytes:
            return answers.popleft() if answers else b""

        arguments: list[Argument] = [b" XOAUTH2"]
        if self.has("SASL-IR"):
            arguments += [b" ", initial]
        _, done = await self._command("AUTHENTICATE", *arguments, on_continuation=answer)
        self._logged_in(done)

    def _logged_in(self, done: Response) -> None:
        """Raise the typed refusal of a NO; else keep only capabilities said after login."""
        if done.name != "OK":
            raise login_refusal(f"[{done.code}]" if done.code else "")
        self.capabilities = frozenset()
        self._take_capability_code(done)

    async def enable(self, *extensions: str) -> frozenset[str]:
        """ENABLE (RFC 5161) those of `extensions` the server offers; return what is enabled."""
        offered = [name.upper() for name in extensions if self.has(name)]
        if not offered or not self.has("ENABLE"):
            return self.enabled
        untagged, done = await self._command("ENABLE", *spaced(*(n.encode() for n in offered)))
        self._check(done, "ENABLE")
        for response in self._unsolicited(untagged, keep={"ENABLED"}):
            self.enabled |= _words(response.segments[0])
        return self.enabled

    async def enable_change_tracking(self) -> frozenset[str]:
        """ENABLE QRESYNC (expunges as VANISHED with UIDs), else CONDSTORE, where offered."""
        if self.has("QRESYNC"):
            return await self.enable("QRESYNC")
        return await self.enable("CONDSTORE")

    async def select(self, folder: str, *, readonly: bool = False) -> SelectedMailbox:
        """SELECT (or EXAMINE when `readonly`) a folder and return its state."""
        command = "EXAMINE" if readonly else "SELECT"
        self.selected = None
        untagged, done = await self._command(command, b" ", astring(encode_folder(folder)))
        await self._check_folder(done, command, folder)
        self.selected = folder
        exists, codes = 0, {}
        for response in self._unsolicited(untagged, keep={"EXISTS", "OK", "FLAGS", "RECENT"}):
            if response.name == "EXISTS" and response.number is not None:
                exists = response.number
            elif response.code is not None:
                codes[response.code] = response.code_argument
        return SelectedMailbox(
            folder=folder,
            exists=exists,
            uidvalidity=_number_or_none(codes.get("UIDVALIDITY")),
            uidnext=_number_or_none(codes.get("UIDNEXT")),
            highestmodseq=_number_or_none(codes.get("HIGHESTMODSEQ")),
            readonly=readonly or done.code == "READ-ONLY",
        )

    async def examine(self, folder: str) -> SelectedMailbox:
        """EXAMINE a folder: SELECT without changing \\Recent or \\Seen."""
        return await self.select(folder, readonly=True)

    async def status(self, folder: str) -> MailboxStatus:
        """STATUS MESSAGES UIDNEXT UIDVALIDITY, and HIGHESTMODSEQ under CONDSTORE, else UNSEEN."""
        untagged, done = await self._command(
            "STATUS", b" ", astring(encode_folder(folder)), b" ", self._status_items()
        )
        await self._check_folder(done, "STATUS", folder)
        found = MailboxStatus()
        for response in untagged:
            if response.name != "STATUS":
                self._queue_event(response)
                continue
            name, status = parse_status(response)
            if name == folder or name.upper() == folder.upper() == "INBOX":
                found = status
            else:  # a NOTIFY event about another folder that arrived meanwhile
                self._events.append(FolderChanged(name, status))
        return found

    async def list_status(self, pattern: str = "*") -> dict[str, MailboxStatus]:
        """LIST-STATUS (RFC 5819): every folder's STATUS in one command."""
        if not self.has("LIST-STATUS"):
            raise ProtocolError("the server does not offer LIST-STATUS")
        untagged, done = await self._command(
            "LIST",
            *spaced(
                b'""',
                astring(encode_folder(pattern)),
                b"RETURN (STATUS " + self._status_items() + b")",
            ),
        )
        self._check(done, "LIST")
        statuses: dict[str, MailboxStatus] = {}
        for response in self._unsolicited(untagged, keep={"STATUS", "LIST"}):
            if response.name == "STATUS":
                name, status = parse_status(response)
                statuses[name] = status
        return statuses

    async def notify(self, folders: Sequence[str] | None, *, selected: bool = True) -> None:
        """NOTIFY SET (RFC 5465): announce arrivals, expunges and flag changes.

        `folders` lists the folders to hear about as `* STATUS` while they are
        not selected; None means every folder of the user (`personal`). With
        `selected`, the selected folder reports as under IDLE (EXISTS, FETCH,
        EXPUNGE/VANISHED). Events arrive through `events()`.
        """
        if not self.has("NOTIFY"):
            raise ProtocolError("the server does not offer NOTIFY")
        arguments: list[Argument] = [b" SET"]
        if selected:
            arguments.append(b" (selected " + _NOTIFY_EVENTS + b")")
        if folders is None:
            arguments.append(b" (personal " + _NOTIFY_EVENTS + b")")
        elif folders:
            arguments.append(b" (mailboxes (")
            arguments += spaced(*(astring(encode_folder(name)) for name in folders))[1:]
            arguments.append(b") " + _NOTIFY_EVENTS + b")")
        if len(arguments) == 1:
            arguments = [b" NONE"]
        _, done = await self._command("NOTIFY", *arguments)
        self._check(done, "NOTIFY")

    async def noop(self) -> list[Event]:
        """NOOP: prove the session alive and collect what the server had to say."""
        untagged, done = await self._command("NOOP")
        self._check(done, "NOOP")
        self._unsolicited(untagged, keep=set())
        return self._drain()

    async def events(
        self, *, renew_after: float = DEFAULT_IDLE_RENEW_SECONDS
    ) -> AsyncIterator[Event]:
        """Yield changes as the server announces them, in IDLE re-issued every `renew_after` s.

        Leave the loop whenever; the next command ends the IDLE.
        """
        while True:
            event = await self.next_event(math.inf, renew_after=renew_after)
            if event is not None:
                yield event

    async def next_event(
        self, timeout: float, *, renew_after: float = DEFAULT_IDLE_RENEW_SECONDS
    ) -> Event | None:
        """Return the next change, or None when `timeout` s pass without one; IDLE stays on.

        Waiting costs nothing until the server speaks. IDLE is re-issued every
        `renew_after` s (DONE, then IDLE again), which is also the keep-alive: a
        dead peer fails that exchange's read deadline.
        """
        if not self.has("IDLE"):
            raise ProtocolError("the server does not offer IDLE")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._events:
            now = loop.time()
            if now >= deadline:
                return None
            if self._idle_tag is None:
                await self._start_idle()
            renew_at = self._idle_since + renew_after
            if now >= renew_at:
                await self._end_idle()
                self.idle_renewals += 1
                continue
            response = await self._read(wait=min(renew_at, deadline) - now)
            if response is None or response.tag == b"+":
                continue
            if response.tag == self._idle_tag:  # the server ended IDLE itself
                self._idle_tag = None
                self._check(response, "IDLE")
                continue
            self._unsolicited([response], keep=set())
        return self._events.popleft()

    async def logout(self) -> None:
        """End IDLE, say LOGOUT, expect BYE and close; a broken session is just dropped."""
        if self._broken:
            await self.abort()
            return
        try:
            self._logging_out = True
            await self._command("LOGOUT")
        except ImapError:
            log.debug("imap.logout_failed")
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Close the transport without a word to the server."""
        self._broken = True
        self._stream.close()

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.logout()

    # --- commands and responses ----------------------------------------------------------

    async def _command(
        self,
        name: str,
        *arguments: Argument,
        on_continuation: Callable[[Response], bytes] | None = None,
    ) -> tuple[list[Response], Response]:
        """Send one command (arguments as written, spaces included) and read to its tagged end.

        Literals wait for the server's go-ahead unless LITERAL+ (RFC 7888) is
        offered; `on_continuation` answers any other `+` (SASL challenges).
        """
        await self._end_idle()
        tag = self._next_tag()
        log.debug("imap.command", extra={"command": name})
        untagged: list[Response] = []
        line = tag + b" " + name.encode()
        for argument in arguments:
            if not isinstance(argument, Literal):
                line += argument
                continue
            if self.has("LITERAL+"):
                line += b"{%d+}\r\n" % len(argument.data) + argument.data
                continue
            await self._write(line + b"{%d}\r\n" % len(argument.data))
            refused = await self._until_continuation(tag, untagged)
            if refused is not None:
                return untagged, refused
            line = argument.data
        await self._write(line + b"\r\n")
        while True:
            response = await self._read()
            assert response is not None  # no `wait`: a silent server raises TimedOut
            if response.tag == tag:
                return untagged, response
            if response.tag == b"+":
                if on_continuation is None:
                    raise self._dropped(ProtocolError("an unexpected continuation request"))
                await self._write(on_continuation(response) + b"\r\n")
            else:
                self._watch_for_bye(response)
                untagged.append(response)

    async def _until_continuation(self, tag: bytes, untagged: list[Response]) -> Response | None:
        """Wait for `+` before a literal; return the tagged response if the server refused."""
        while True:
            response = await self._read()
            assert response is not None
            if response.tag == b"+":
                return None
            if response.tag == tag:
                return response
            self._watch_for_bye(response)
            untagged.append(response)

    async def _start_idle(self) -> None:
        tag = self._next_tag()
        await self._write(tag + b" IDLE\r\n")
        untagged: list[Response] = []
        refused = await self._until_continuation(tag, untagged)
        self._unsolicited(untagged, keep=set())
        if refused is not None:
            self._check(refused, "IDLE")
        self._idle_tag = tag
        self._idle_since = asyncio.get_running_loop().time()

    async def _end_idle(self) -> None:
        """Send DONE and read up to IDLE's tagged end, keeping the events on the way."""
        if self._idle_tag is None:
            return
        tag, self._idle_tag = self._idle_tag, None
        await self._write(b"DONE\r\n")
        while True:
            response = await self._read()
            assert response is not None
            if response.tag == tag:
                self._check(response, "IDLE")
                return
            self._unsolicited([response], keep=set())

    async def _write(self, data: bytes) -> None:
        if self._broken:
            raise ConnectionLost("the session was dropped after an earlier failure")
        with self._transport_errors():
            self._stream.write(data)
            async with asyncio.timeout(self._options.read_timeout):
                await self._stream.drain()

    async def _read(
        self, *, timeout: float | None = None, wait: float | None = None
    ) -> Response | None:
        """Read one response within the read deadline; None if nothing began within `wait`."""
        if self._broken:
            raise ConnectionLost("the session was dropped after an earlier failure")
        timeout = timeout or self._options.read_timeout
        with self._transport_errors():
            first_line = None
            if wait is not None:
                try:
                    first_line = await read_line(self._reader, self._limits, wait)
                except TimeoutError:
                    return None
            return await read_response(self._reader, self._limits, timeout, first_line)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Translate transport failures to `ImapError`s; drop the session they left out of step."""
        try:
            with imap_errors():
                yield
        except BaseException:
            self._broke()
            raise

    def _broke(self) -> None:
        """Mark the session unusable: its stream is out of step or the server left."""
        self._broken = True
        self._stream.close()

    def _dropped(self, error: ImapError) -> ImapError:
        """Drop the session and return `error` to raise."""
        self._broke()
        return error

    def _next_tag(self) -> bytes:
        self._tags += 1
        return b"W%d" % self._tags

    def _check(self, done: Response, command: str) -> None:
        """Raise the typed error for a tagged NO or BAD."""
        if done.name == "OK":
            return
        if done.code == "NONEXISTENT":
            raise FolderNotFound(f"{command}: {done.text}")
        if done.code == "UNAVAILABLE":
            raise ServerUnavailable(f"{command}: the server cannot serve this now")
        raise ProtocolError(f"{command} failed: {done.name} {done.text}")

    async def _check_folder(self, done: Response, command: str, folder: str) -> None:
        """Raise `FolderNotFound` for a folder that is gone, else what `_check` raises.

        Servers without RFC 5530 codes (Dovecot 2.3 among them) refuse a missing
        folder with a bare NO, so LIST settles whether it exists.
        """
        if done.name == "NO" and done.code is None and not await self._exists(folder):
            raise FolderNotFound(f"{command}: the folder does not exist")
        self._check(done, command)

    async def _exists(self, folder: str) -> bool:
        untagged, done = await self._command("LIST", b' "" ', astring(encode_folder(folder)))
        self._check(done, "LIST")
        listed = self._unsolicited(untagged, keep={"LIST"})
        return any(b"\\NONEXISTENT" not in response.segments[0].upper() for response in listed)

    def _watch_for_bye(self, response: Response) -> None:
        """Turn BYE (and an untagged [UNAVAILABLE]) into the typed error that ends the session."""
        if response.name == "BYE" and not self._logging_out:
            if response.code == "UNAVAILABLE":
                raise self._dropped(ServerUnavailable(f"the server said goodbye: {response.text}"))
            raise self._dropped(ConnectionLost(f"the server said goodbye: {response.text}"))
        if response.name in {"NO", "BAD"} and response.code == "UNAVAILABLE":
            raise self._dropped(ServerUnavailable(f"the server is unavailable: {response.text}"))

    def _unsolicited(self, responses: list[Response], *, keep: set[str]) -> list[Response]:
        """Return the responses named in `keep`; queue the rest that are events."""
        kept = []
        for response in responses:
            self._watch_for_bye(response)
            if response.name in keep:
                kept.append(response)
            else:
                self._queue_event(response)
        return kept

    def _queue_event(self, response: Response) -> None:
        event = event_from(response, self.selected or "")
        if event is not None:
            self._events.append(event)
        else:
            log.debug("imap.untagged_ignored", extra={"response": response.name})

    def _drain(self) -> list[Event]:
        drained = list(self._events)
        self._events.clear()
        return drained

    def _take_capability_code(self, response: Response) -> None:
        """Use `[CAPABILITY ...]` in a greeting or login answer, saving a round trip."""
        if response.code == "CAPABILITY":
            self.capabilities = _words(response.code_argument)

    def _status_items(self) -> bytes:
        """HIGHESTMODSEQ under CONDSTORE, else UNSEEN: without a mod-sequence (Courier), a
        folder's count of unseen mail is the one STATUS item that a flag change (\\Seen) moves."""
        changes = b" HIGHESTMODSEQ" if self.has("CONDSTORE") else b" UNSEEN"
        return b"(MESSAGES UIDNEXT UIDVALIDITY" + changes + b")"


def spaced(*arguments: Argument) -> list[Argument]:
    """Put a space before each argument, as a command line needs."""
    spaced: list[Argument] = []
    for argument in arguments:
        spaced += [b" ", argument]
    return spaced


def _words(text: bytes) -> frozenset[str]:
    return frozenset(word.decode().upper() for word in text.split())


def _number_or_none(text: bytes | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None
