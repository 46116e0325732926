"""How many IMAP sessions Dovecot held at once, read from its own log.

Dovecot logs `imap-login: ... Login: user=<name>, ..., session=<id>` when a session
is handed to its `imap` process, and `imap(name)<pid><id>: ... Disconnected: ...`
when it ends (logged out, or the client vanished). Replaying those lines in the
order Dovecot wrote them gives the sessions open at every moment, as the server
saw them: no client-side count can claim that.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_LOGIN = re.compile(r"imap-login: Info: Login: user=<([^>]+)>.*session=<([^>]+)>")
_DISCONNECTED = re.compile(r"imap\([^)]+\)<\d+><([^>]+)>: Info: Disconnected")


@dataclass
class SessionLog:
    """Dovecot's log from the moment this was made: sessions of `users` only."""

    log_file: Path
    users: Collection[str]
    offset: int = 0

    def __post_init__(self) -> None:
        self.offset = self.log_file.stat().st_size

    def lines(self) -> list[str]:
        with self.log_file.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace").splitlines()

    def most_at_once(self) -> int:
        """Return the most sessions of the users that were open at the same time."""
        open_sessions: set[str] = set()
        most = 0
        for line in self.lines():
            if (login := _LOGIN.search(line)) and login.group(1) in self.users:
                open_sessions.add(login.group(2))
                most = max(most, len(open_sessions))
            elif disconnected := _DISCONNECTED.search(line):
                open_sessions.discard(disconnected.group(1))
        return most

    def logins(self) -> int:
        """Return how many sessions of the users logged in."""
        return sum(
            1
            for line in self.lines()
            if (login := _LOGIN.search(line)) and login.group(1) in self.users
        )
