"""A scripted IMAP server on loopback that misbehaves on purpose.

It is a hostile peer, not a stand-in for a real server: it speaks just
enough IMAP (plain text, LOGIN, CAPABILITY, LOGOUT) to get a client to the
point where it misbehaves, then does what the test asked for:

    drip      send the greeting one byte at a time, each just inside the
              client's read timeout, and never finish it
    literal   answer LIST and UID FETCH by announcing a huge literal
              (`{999999999999}`) and then sending nothing more (EXAMINE works,
              so that a client gets as far as fetching)

`dripping_proxy` relays to a real server (Dovecot's TLS port) and passes what
the server says on one byte at a time, so a TLS handshake itself crawls;
`rewriting_proxy` relays to a plain port and changes or drops answer lines, so a
real server leaves out what a test says (a SELECT's UIDNEXT, a UID in a listing).

Every connection gets its own thread; `stop()` closes them all, so a client
still waiting on a drip sees the connection end.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

Behaviour = Literal["drip", "literal"]
HUGE_LITERAL = 999_999_999_999
_CAPABILITIES = b"IMAP4rev1 LITERAL+ AUTH=PLAIN"


@dataclass
class HostileImapServer:
    """Listen on 127.0.0.1 and treat every client as `behaviour` says."""

    behaviour: Behaviour
    drip_interval: float = 0.2
    sock: socket.socket = field(init=False)
    connections: int = field(default=0, init=False)
    _clients: list[socket.socket] = field(default_factory=list, init=False)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def stop(self) -> None:
        self._stopped.set()
        self.sock.close()
        for client in list(self._clients):
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with suppress(OSError):
            if self.behaviour == "drip":
                self._drip(client)
            else:
                self._converse(client)

    def _drip(self, client: socket.socket) -> None:
        client.sendall(b"* OK ")
        while not self._stopped.wait(self.drip_interval):
            client.sendall(b"x")

    def _converse(self, client: socket.socket) -> None:
        client.sendall(b"* OK [CAPABILITY " + _CAPABILITIES + b"] hostile server ready\r\n")
        for line in _lines(client):
            tag, _, rest = line.partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"CAPABILITY":
                client.sendall(b"* CAPABILITY " + _CAPABILITIES + b"\r\n" + tag + b" OK done\r\n")
            elif command == b"LOGIN":
                client.sendall(tag + b" OK [CAPABILITY " + _CAPABILITIES + b"] logged in\r\n")
            elif command == b"LOGOUT":
                client.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            elif command in (b"EXAMINE", b"SELECT"):
                client.sendall(
                    b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 2] ok\r\n"
                    + tag
                    + b" OK [READ-ONLY] done\r\n"
                )
            elif command in (b"LIST", b"UID"):
                announcement = (
                    b'* LIST () "/" ' if command == b"LIST" else b"* 1 FETCH (UID 1 BODY[] "
                )
                client.sendall(announcement + b"{%d}\r\n" % HUGE_LITERAL)
                self._stopped.wait()  # the promised bytes never come
                return
            else:
                client.sendall(tag + b" BAD unknown command\r\n")


def _lines(client: socket.socket) -> Iterator[bytes]:
    buffered = b""
    while chunk := client.recv(4096):
        buffered += chunk
        while b"\r\n" in buffered:
            line, buffered = buffered.split(b"\r\n", 1)
            yield line


@contextmanager
def hostile_imap_server(
    behaviour: Behaviour, drip_interval: float = 0.2
) -> Iterator[HostileImapServer]:
    server = HostileImapServer(behaviour, drip_interval)
    try:
        yield server
    finally:
        server.stop()


def wait_for_connections(server: HostileImapServer, count: int, timeout: float = 10.0) -> None:
    """Wait until `count` clients have connected (they are then stuck on the server)."""
    deadline = time.monotonic() + timeout
    while server.connections < count:
        assert time.monotonic() < deadline, f"only {server.connections} of {count} connected"
        time.sleep(0.01)


Relay = Callable[[socket.socket, socket.socket, threading.Event], None]


@contextmanager
def dripping_proxy(upstream_port: int, drip_interval: float = 0.05) -> Iterator[int]:
    """Relay 127.0.0.1:<yielded port> to `upstream_port`, the answers one byte at a time."""

    def drip(source: socket.socket, target: socket.socket, stopped: threading.Event) -> None:
        while (data := source.recv(4096)) and not stopped.is_set():
            for piece in [data[i : i + 1] for i in range(len(data))]:
                target.sendall(piece)
                if stopped.wait(drip_interval):
                    return

    with _proxy(upstream_port, drip) as port:
        yield port


@contextmanager
def rewriting_proxy(upstream_port: int, rewrite: Callable[[bytes], bytes | None]) -> Iterator[int]:
    """Relay to `upstream_port` (plain IMAP), passing each answer line through `rewrite`.

    `rewrite` gets a line without its CRLF and returns it changed, or None to drop it:
    a real server made to contradict itself exactly where a test says.
    """

    def rewrite_lines(
        source: socket.socket, target: socket.socket, stopped: threading.Event
    ) -> None:
        buffered = b""
        while (data := source.recv(4096)) and not stopped.is_set():
            *lines, buffered = (buffered + data).split(b"\r\n")
            kept = [line for line in map(rewrite, lines) if line is not None]
            target.sendall(b"".join(line + b"\r\n" for line in kept))

    with _proxy(upstream_port, rewrite_lines) as port:
        yield port


@contextmanager
def _proxy(upstream_port: int, answer: Relay) -> Iterator[int]:
    """Relay 127.0.0.1:<yielded port> to `upstream_port`; `answer` carries the server's side."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopped = threading.Event()
    opened: list[socket.socket] = []

    def forward(source: socket.socket, target: socket.socket, stopped: threading.Event) -> None:
        while (data := source.recv(4096)) and not stopped.is_set():
            target.sendall(data)

    def run(relay: Relay, source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            relay(source, target, stopped)

    def accept() -> None:
        with suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", upstream_port))
                opened.extend((client, server))
                threading.Thread(target=run, args=(forward, client, server), daemon=True).start()
                threading.Thread(target=run, args=(answer, server, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopped.set()
        listener.close()
        for sock in opened:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
