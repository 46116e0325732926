"""A TCP proxy between the service and the test Dovecot that breaks connections on cue.

    service --> FaultProxy (127.0.0.1, its own port) --> Dovecot (plain or TLS port)

It only forwards bytes, so TLS passes through end to end. An armed fault hits every
connection, each counted from its own start, until `heal()`:

    Fault.cut_after(n)        n bytes from the server reach the client, then both sides
                              are closed (a connection dropped mid-FETCH)
    Fault.stall_after(n, s)   n bytes from the server, then nothing either way for s
                              seconds (longer than the read timeout: the client gives up)
    Fault.cut_on(command)     the client's n-th `tag COMMAND ...` line: both sides are
                              closed before the server sees it (plain port only: TLS
                              hides the commands)

`take_down()` plays a server that went away: every open connection is closed and each
new one is closed as soon as it is accepted, until `heal()`. It serves any TCP service,
so a PostgreSQL or a Redis shared by other tests can be "down" for one test alone.

The proxy runs an asyncio loop in a thread of its own, so the synchronous sync engine
under test is driven from the test's thread as the worker would drive it.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

_CHUNK = 64 * 1024

FaultAction = Literal["cut", "stall"]


@dataclass(frozen=True, slots=True)
class Fault:
    """When a connection breaks (server bytes seen or a client command) and how."""

    action: FaultAction
    after_server_bytes: int | None = None
    command: bytes | None = None
    containing: bytes = b""
    nth: int = 1
    stall_seconds: float = 0.0

    @classmethod
    def cut_after(cls, server_bytes: int) -> Fault:
        return cls("cut", after_server_bytes=server_bytes)

    @classmethod
    def stall_after(cls, server_bytes: int, seconds: float) -> Fault:
        return cls("stall", after_server_bytes=server_bytes, stall_seconds=seconds)

    @classmethod
    def cut_on(cls, command: bytes, *, containing: bytes = b"", nth: int = 1) -> Fault:
        """Cut at the `nth` command line starting `command` (e.g. b"UID FETCH") on a connection."""
        return cls("cut", command=command.upper(), containing=containing, nth=nth)

    def names(self, line: bytes) -> bool:
        """Say whether a client line (CRLF stripped) is the command this fault watches for."""
        assert self.command is not None
        _tag, _, rest = line.partition(b" ")
        words = rest.upper()
        return (
            words == self.command or words.startswith(self.command + b" ")
        ) and self.containing in rest


class _Cut(Exception):
    """The fault closes this connection now."""


class _Connection:
    """One proxied connection: how far it got, and whether its fault has struck."""

    def __init__(self) -> None:
        self.server_bytes = 0
        self.commands_seen = 0
        self.struck = False
        self.partial_line = b""
        self.stalled_until = 0.0

    async def flowing(self) -> None:
        """Return once no stall holds this connection."""
        loop = asyncio.get_running_loop()
        while (left := self.stalled_until - loop.time()) > 0:
            await asyncio.sleep(left)


class FaultProxy:
    """Forward 127.0.0.1:`port` to `upstream_host`:`upstream_port`, breaking what is armed.

    Use as a context manager: entering starts the thread and binds `port`, leaving
    closes every connection and stops the thread.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self._fault: Fault | None = None
        self._down = False
        self._strikes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def strikes(self) -> int:
        """Count the connections a fault has broken so far: proof the fault was hit."""
        return self._strikes

    def arm(self, fault: Fault) -> None:
        """Break connections with `fault` (also those already open) until `heal()`."""
        self._fault = fault

    def heal(self) -> None:
        """Forward faithfully again."""
        self._fault = None
        self._down = False

    def take_down(self) -> None:
        """Close every open connection and refuse new ones until `heal()`: the server is down."""
        self._down = True
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result(timeout=10)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cancel_handlers()
        await self._server.wait_closed()

    async def _cut_all(self) -> None:
        self._strikes += len(self._handlers)
        await self._cancel_handlers()

    async def _cancel_handlers(self) -> None:
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            if self._down:
                self._strikes += 1
                return
            try:
                server_in, server_out = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return
            connection = _Connection()
            pumps = [
                asyncio.create_task(self._to_server(connection, client_in, server_out)),
                asyncio.create_task(self._to_client(connection, server_in, client_out)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                server_out.transport.abort()
        except asyncio.CancelledError:
            pass  # cut by take_down() or the proxy's end; asyncio would log a cancelled handler
        finally:
            client_out.transport.abort()
            self._handlers.discard(handler)

    async def _to_client(
        self, connection: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        while data := await source.read(_CHUNK):
            fault = self._fault
            limit = fault.after_server_bytes if fault and not connection.struck else None
            if fault and limit is not None and connection.server_bytes + len(data) >= limit:
                head = limit - connection.server_bytes
                await self._forward(connection, sink, data[:head])
                connection.server_bytes += head
                await self._strike(connection, fault)
                data = data[head:]
            connection.server_bytes += len(data)
            await self._forward(connection, sink, data)

    async def _to_server(
        self, connection: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        while data := await source.read(_CHUNK):
            fault = self._fault
            if fault is not None and fault.command is not None and not connection.struck:
                start = self._command_start(connection, fault, data)
                if start is not None:
                    await self._forward(connection, sink, data[:start])
                    await self._strike(connection, fault)
                    data = data[start:]
            await self._forward(connection, sink, data)

    @staticmethod
    def _command_start(connection: _Connection, fault: Fault, data: bytes) -> int | None:
        """Return where in `data` the watched command's line starts, once that line is whole."""
        carried = len(connection.partial_line)
        text = connection.partial_line + data
        line_start = 0
        while (end := text.find(b"\r\n", line_start)) >= 0:
            if fault.names(text[line_start:end]):
                connection.commands_seen += 1
                if connection.commands_seen == fault.nth:
                    connection.partial_line = b""
                    return max(line_start - carried, 0)
            line_start = end + 2
        connection.partial_line = text[line_start:]
        return None

    async def _strike(self, connection: _Connection, fault: Fault) -> None:
        connection.struck = True
        self._strikes += 1
        if fault.action == "cut":
            raise _Cut
        connection.stalled_until = asyncio.get_running_loop().time() + fault.stall_seconds

    @staticmethod
    async def _forward(connection: _Connection, sink: asyncio.StreamWriter, data: bytes) -> None:
        if not data:
            return
        await connection.flowing()
        sink.write(data)
        await sink.drain()


READ_TIMEOUT = 1.5
