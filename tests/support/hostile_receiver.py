"""Peers that answer the way a hostile or broken server would, over real TCP.

A webhook receiver reads each request's head and body, then either drips an
answer one byte at a time without end, or sends a 200 head followed by a body
far larger than any reader should take; an SMTP server drips its greeting.
These are scripted hostile peers on loopback, not mocks of anything of ours.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

ENDLESS_BODY_BYTES = 64 * 1024 * 1024  # far beyond any socket buffer on loopback
_CHUNK = b"x" * 65536


class Behaviour(StrEnum):
    DRIP = "drip"  # one byte of the status line every 0.1 s, for ever
    ENDLESS_BODY = "endless_body"  # 200, then ENDLESS_BODY_BYTES of body as fast as taken
    SMTP_DRIP = "smtp_drip"  # an SMTP greeting, one byte every 0.1 s, for ever


@dataclass
class HostileReceiver:
    """What the receiver did; `body_sent_whole` says whether a reader took the whole body."""

    behaviour: Behaviour
    url: str = ""
    requests: int = 0
    body_sent_whole: bool | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def serve(self, conn: socket.socket) -> None:
        if self.behaviour is not Behaviour.SMTP_DRIP:  # an SMTP server speaks first
            _read_request(conn)
        self.requests += 1
        try:
            if self.behaviour is Behaviour.DRIP:
                self._drip(conn, b"HTTP/1.1 200 OK\r\n")
            elif self.behaviour is Behaviour.SMTP_DRIP:
                self._drip(conn, b"220-smtp.example slowly\r\n")
            else:
                head = f"HTTP/1.1 200 OK\r\ncontent-length: {ENDLESS_BODY_BYTES}\r\n\r\n"
                conn.sendall(head.encode())
                for _ in range(ENDLESS_BODY_BYTES // len(_CHUNK)):
                    conn.sendall(_CHUNK)
                self.body_sent_whole = True
        except OSError:  # the client hung up, which is what a bounded reader does
            if self.behaviour is Behaviour.ENDLESS_BODY:
                self.body_sent_whole = False

    def _drip(self, conn: socket.socket, line: bytes) -> None:
        for byte in line * 10_000:
            if self.stop.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.1)


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@contextmanager
def hostile_receiver(behaviour: Behaviour) -> Iterator[HostileReceiver]:
    """Serve `behaviour` on 127.0.0.1 in threads; stop it afterwards."""
    receiver = HostileReceiver(behaviour)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            receiver.serve(self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    scheme = "smtp" if behaviour is Behaviour.SMTP_DRIP else "http"
    receiver.url = f"{scheme}://127.0.0.1:{port}" + ("" if scheme == "smtp" else "/hook")
    try:
        yield receiver
    finally:
        receiver.stop.set()
        server.shutdown()
        server.server_close()
