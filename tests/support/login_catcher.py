"""A hostile IMAP server for tests: it greets, refuses every login and keeps every line,
so a test sees whether a credential was sent to it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class LoginCatcher:
    """A hostile IMAP server on 127.0.0.1: greets, refuses every login, keeps every line."""

    def __init__(self, capabilities: bytes = b"IMAP4rev1 AUTH=PLAIN") -> None:
        self.capabilities = capabilities
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lines: list[bytes] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            self.connections += 1
            with client, client.makefile("rb") as reader:
                client.sendall(b"* OK [CAPABILITY " + self.capabilities + b"] ready\r\n")
                for line in reader:
                    self.lines.append(line)
                    tag, _, command = line.partition(b" ")
                    if command.strip().upper() == b"CAPABILITY":
                        client.sendall(
                            b"* CAPABILITY " + self.capabilities + b"\r\n" + tag + b" OK done\r\n"
                        )
                    else:
                        client.sendall(tag + b" NO [AUTHENTICATIONFAILED] no\r\n")

    def heard(self) -> bytes:
        return b"".join(self.lines)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self._thread.join(timeout=5)


@contextmanager
def login_catcher(capabilities: bytes = b"IMAP4rev1 AUTH=PLAIN") -> Iterator[LoginCatcher]:
    server = LoginCatcher(capabilities)
    try:
        yield server
    finally:
        server.close()
